//! The client and the closed loop against small purpose-built servers on 127.0.0.1.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use axum::Router;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::{get, post};
use infphys::schema;
use infphys::{
    ApiKey, ChatRequest, Client, Error, ErrorKind, LoadSpec, Progress, Target, run_load,
};

const REPLY: &str = r#"{"choices":[{"message":{"role":"assistant","content":"hello there"},"finish_reason":"stop"}],"usage":{"prompt_tokens":12,"completion_tokens":2}}"#;

/// Serves `app` on 127.0.0.1 and a free port; the server lives as long as the test's runtime.
async fn serve(app: Router) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    tokio::spawn(async move {
        axum::serve(listener, app).await.unwrap();
    });
    format!("http://{address}")
}

fn client_for(base_url: &str, key: Option<&str>) -> Client {
    let target = Target::server(
        base_url,
        "/v1/chat/completions",
        "test-model",
        key.map(ApiKey::new),
    )
    .unwrap();
    Client::new(target).unwrap()
}

/// Returns the URL of a port with nothing listening: binds one, then closes it.
async fn closed_port_url() -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    drop(listener);
    format!("http://{address}")
}

#[tokio::test]
async fn chat_once_returns_text_usage_and_status() {
    let url = serve(Router::new().route("/v1/chat/completions", post(|| async { REPLY }))).await;
    let reply = client_for(&url, None)
        .chat_once(&ChatRequest::new("hi", 8))
        .await
        .unwrap();
    assert_eq!(reply.text, "hello there");
    assert_eq!(reply.status, 200);
    let usage = reply.usage.unwrap();
    assert_eq!(usage.prompt_tokens, Some(12));
    assert_eq!(usage.completion_tokens, Some(2));
    assert!(reply.latency > Duration::ZERO);
}

#[tokio::test]
async fn bearer_key_is_sent_but_never_shown() {
    let seen = Arc::new(std::sync::Mutex::new(None::<String>));
    let record = Arc::clone(&seen);
    let app = Router::new().route(
        "/v1/chat/completions",
        post(move |headers: HeaderMap| {
            let record = Arc::clone(&record);
            async move {
                *record.lock().unwrap() = headers
                    .get("authorization")
                    .map(|v| v.to_str().unwrap().to_owned());
                (
                    StatusCode::UNAUTHORIZED,
                    r#"{"error":{"message":"bad key"}}"#,
                )
            }
        }),
    );
    let url = serve(app).await;
    let client = client_for(&url, Some("nvapi-TOPSECRET"));

    let failure = client
        .chat_once(&ChatRequest::new("hi", 8))
        .await
        .unwrap_err();
    assert_eq!(
        seen.lock().unwrap().as_deref(),
        Some("Bearer nvapi-TOPSECRET")
    );
    assert_eq!(failure.kind, ErrorKind::HttpStatus);
    assert_eq!(failure.status, Some(401));
    assert!(
        !failure.message.contains("TOPSECRET"),
        "{}",
        failure.message
    );
    assert!(!format!("{client:?}").contains("TOPSECRET"));
}

#[tokio::test]
async fn timeout_becomes_error_row_and_is_respected() {
    let app = Router::new().route(
        "/v1/chat/completions",
        post(|| async {
            tokio::time::sleep(Duration::from_secs(30)).await;
            REPLY
        }),
    );
    let url = serve(app).await;
    let client = client_for(&url, None);
    let timeout = Duration::from_millis(300);
    let spec = LoadSpec {
        total_requests: 4,
        concurrency: 2,
        request: ChatRequest::new("hi", 8).timeout(timeout),
    };

    let run = run_load(&client, &spec, Progress::Silent).await.unwrap();
    assert_eq!(run.records.len(), 4);
    for record in &run.records {
        assert_eq!(record.error_kind, Some(ErrorKind::Timeout), "{record:?}");
        assert!(
            record.latency >= timeout,
            "gave up early: {:?}",
            record.latency
        );
        // Far below the server's 30 s sleep: the client did not wait for the response.
        assert!(
            record.latency < Duration::from_secs(10),
            "timeout ignored: {:?}",
            record.latency
        );
    }
    let summary = run.summary();
    assert_eq!(summary.err, 4);
    assert_eq!(summary.error_rate, 1.0);
    assert_eq!(summary.latency.p95, None);
    assert!(summary.sample_error.unwrap().starts_with("timeout"));
}

#[tokio::test]
async fn malformed_body_becomes_decode_row() {
    let url =
        serve(Router::new().route("/v1/chat/completions", post(|| async { "{not json" }))).await;
    let spec = LoadSpec {
        total_requests: 3,
        concurrency: 3,
        request: ChatRequest::new("hi", 8),
    };
    let run = run_load(&client_for(&url, None), &spec, Progress::Silent)
        .await
        .unwrap();
    assert_eq!(run.records.len(), 3);
    assert!(
        run.records
            .iter()
            .all(|r| r.error_kind == Some(ErrorKind::Decode))
    );
    assert!(run.records.iter().all(|r| r.http_status == Some(200)));
}

#[tokio::test]
async fn http_errors_are_counted_not_dropped() {
    let calls = Arc::new(AtomicUsize::new(0));
    let counter = Arc::clone(&calls);
    let app = Router::new().route(
        "/v1/chat/completions",
        post(move || {
            let n = counter.fetch_add(1, Ordering::SeqCst);
            async move {
                if n % 2 == 0 {
                    (StatusCode::OK, REPLY)
                } else {
                    (
                        StatusCode::SERVICE_UNAVAILABLE,
                        r#"{"error":{"message":"overloaded"}}"#,
                    )
                }
            }
        }),
    );
    let url = serve(app).await;
    let spec = LoadSpec {
        total_requests: 10,
        concurrency: 1,
        request: ChatRequest::new("hi", 8),
    };
    let run = run_load(&client_for(&url, None), &spec, Progress::Silent)
        .await
        .unwrap();
    let summary = run.summary();
    assert_eq!(summary.ok, 5);
    assert_eq!(summary.err, 5);
    assert_eq!(summary.error_rate, 0.5);
    assert_eq!(summary.latency.n, 5);
    let failed: Vec<_> = run.records.iter().filter(|r| !r.ok()).collect();
    assert!(
        failed
            .iter()
            .all(|r| r.http_status == Some(503) && r.error_kind == Some(ErrorKind::HttpStatus))
    );
    assert!(
        summary
            .sample_error
            .unwrap()
            .contains("HTTP 503: overloaded")
    );
}

#[tokio::test]
async fn closed_loop_never_exceeds_concurrency() {
    let in_flight = Arc::new(AtomicUsize::new(0));
    let peak = Arc::new(AtomicUsize::new(0));
    let (now, max) = (Arc::clone(&in_flight), Arc::clone(&peak));
    let app = Router::new().route(
        "/v1/chat/completions",
        post(move || {
            let (now, max) = (Arc::clone(&now), Arc::clone(&max));
            async move {
                let current = now.fetch_add(1, Ordering::SeqCst) + 1;
                max.fetch_max(current, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(20)).await;
                now.fetch_sub(1, Ordering::SeqCst);
                REPLY
            }
        }),
    );
    let url = serve(app).await;
    let spec = LoadSpec {
        total_requests: 40,
        concurrency: 4,
        request: ChatRequest::new("hi", 8),
    };
    let run = run_load(&client_for(&url, None), &spec, Progress::Silent)
        .await
        .unwrap();
    assert_eq!(run.records.len(), 40);
    assert_eq!(peak.load(Ordering::SeqCst), 4);
    let mut ids: Vec<u64> = run.records.iter().map(|r| r.request_id).collect();
    ids.sort_unstable();
    assert_eq!(ids, (0..40).collect::<Vec<_>>());
    assert!(run.records.iter().all(|r| r.sent >= r.scheduled));
}

#[tokio::test]
async fn dead_server_gives_connect_rows() {
    let url = closed_port_url().await;
    let spec = LoadSpec {
        total_requests: 5,
        concurrency: 2,
        request: ChatRequest::new("hi", 8),
    };
    let run = run_load(&client_for(&url, None), &spec, Progress::Silent)
        .await
        .unwrap();
    assert_eq!(run.records.len(), 5);
    assert!(
        run.records
            .iter()
            .all(|r| r.error_kind == Some(ErrorKind::Connect)),
        "{:?}",
        run.records
    );
    assert!(run.records.iter().all(|r| r.http_status.is_none()));
}

#[tokio::test]
async fn preflight_on_dead_server_explains_the_fix() {
    let url = closed_port_url().await;
    let error = infphys::preflight(&client_for(&url, None))
        .await
        .unwrap_err();
    assert!(matches!(error, Error::Preflight { .. }), "{error:?}");
    let message = error.to_string();
    assert!(message.contains(&url), "{message}");
    assert!(message.contains("connect"), "{message}");
    assert!(message.contains("NIM_BASE_URL=sim"), "{message}");
    assert!(message.contains("scripts/real-server.sh"), "{message}");
}

#[tokio::test]
async fn unreachable_explicit_url_is_error() {
    let url = closed_port_url().await;
    let spec =
        infphys::TargetSpec::from_lookup(|name| (name == "NIM_BASE_URL").then(|| url.clone()))
            .unwrap();
    let error = infphys::resolve(&spec).await.unwrap_err();
    assert!(matches!(error, Error::Unreachable { .. }), "{error:?}");
    assert!(error.to_string().contains("Start the server"), "{error}");
}

#[tokio::test]
async fn redirects_are_not_followed() {
    let app = Router::new().route(
        "/v1/chat/completions",
        post(|| async {
            (
                StatusCode::TEMPORARY_REDIRECT,
                [("location", "http://127.0.0.2:9/elsewhere")],
                "",
            )
        }),
    );
    let url = serve(app).await;
    let failure = client_for(&url, None)
        .chat_once(&ChatRequest::new("hi", 8))
        .await
        .unwrap_err();
    assert_eq!(failure.kind, ErrorKind::HttpStatus);
    assert_eq!(failure.status, Some(307));
}

#[tokio::test]
async fn frames_have_schema_columns_exactly() {
    let app = Router::new()
        .route("/v1/chat/completions", post(|| async { REPLY }))
        .route("/v1/models", get(|| async { "{}" }));
    let url = serve(app).await;
    let client = client_for(&url, None);
    let request = ChatRequest::new("hi", 8);

    let sweep = infphys::sweep(&client, &[2, 1], 4, &request, Progress::Silent)
        .await
        .unwrap();
    let summary = sweep.summary_frame().unwrap();
    let names: Vec<&str> = summary
        .get_column_names()
        .iter()
        .map(|n| n.as_str())
        .collect();
    assert_eq!(names, schema::LOAD_SUMMARY_COLUMNS);
    let levels = infphys::frames::column_f64(&summary, schema::CONCURRENCY).unwrap();
    assert_eq!(levels, vec![1.0, 2.0], "sweep not sorted by concurrency");

    let requests = sweep.requests_frame().unwrap();
    let names: Vec<&str> = requests
        .get_column_names()
        .iter()
        .map(|n| n.as_str())
        .collect();
    assert_eq!(names, schema::REQUEST_COLUMNS);
    assert_eq!(requests.height(), 8);

    let baseline = infphys::baseline(&client, 3, &request, Progress::Silent)
        .await
        .unwrap();
    let table = baseline.latency_summary_frame().unwrap();
    let names: Vec<&str> = table
        .get_column_names()
        .iter()
        .map(|n| n.as_str())
        .collect();
    assert_eq!(names, schema::LATENCY_SUMMARY_COLUMNS);

    let budget = infphys::token_budget(&client, &[10, 20], &[4, 8], 2, &request, Progress::Silent)
        .await
        .unwrap();
    let table = budget.frame().unwrap();
    let names: Vec<&str> = table
        .get_column_names()
        .iter()
        .map(|n| n.as_str())
        .collect();
    assert_eq!(names, schema::TOKEN_BUDGET_COLUMNS);
    assert_eq!(table.height(), 4);
}

#[tokio::test]
async fn invalid_load_specs_are_rejected_with_the_value() {
    let client = client_for("http://127.0.0.1:9", None);
    let zero = LoadSpec {
        total_requests: 4,
        concurrency: 0,
        request: ChatRequest::new("hi", 8),
    };
    let message = run_load(&client, &zero, Progress::Silent)
        .await
        .unwrap_err()
        .to_string();
    assert!(message.contains("concurrency"), "{message}");

    let message = infphys::sweep(
        &client,
        &[],
        4,
        &ChatRequest::new("hi", 8),
        Progress::Silent,
    )
    .await
    .unwrap_err()
    .to_string();
    assert!(message.contains("at least one level"), "{message}");

    let no_timeout = ChatRequest::new("hi", 8).timeout(Duration::ZERO);
    let message = infphys::baseline(&client, 2, &no_timeout, Progress::Silent)
        .await
        .unwrap_err()
        .to_string();
    assert!(message.contains("timeout"), "{message}");
}

/// Serves a valid chat completion to every request after `delay`, on 127.0.0.1.
async fn serve_replies_after(delay: Duration) -> String {
    let app = Router::new().route(
        "/v1/chat/completions",
        post(move || async move {
            tokio::time::sleep(delay).await;
            REPLY
        }),
    );
    serve(app).await
}

#[tokio::test]
async fn interrupted_run_keeps_rows_in_journal() {
    let url = serve_replies_after(Duration::from_millis(20)).await;
    let folder = std::env::temp_dir().join(format!("infphys-interrupt-{}", std::process::id()));
    let path = folder.join("requests.jsonl");
    let journal = infphys::journal::Journal::create(&path).unwrap();
    let client = client_for(&url, None).with_journal(journal);
    let spec = LoadSpec {
        total_requests: 10_000,
        concurrency: 2,
        request: ChatRequest::new("hi", 8),
    };

    // Dropping the run's future is what an interrupt does to it.
    let interrupted = tokio::time::timeout(
        Duration::from_millis(500),
        run_load(&client, &spec, Progress::Silent),
    )
    .await;
    assert!(
        interrupted.is_err(),
        "the run finished before the interrupt"
    );

    let contents = infphys::journal::read_journal(&path).unwrap();
    assert_eq!(contents.skipped_lines, 0);
    let frame = &contents.requests;
    assert!(frame.height() >= 5, "only {} rows survived", frame.height());
    assert!(frame.height() < 10_000);
    let ok = frame.column(schema::OK).unwrap().bool().unwrap();
    assert!(ok.iter().all(|v| v == Some(true)));
    // The run never wrote its finish line, so it reads back as partial.
    let partial = contents.partial_runs();
    assert_eq!(partial.len(), 1, "{partial:?}");
    assert_eq!(partial[0].2, Some(10_000));

    // The dropped run stops sending: the journal stops growing.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let rows = |path| {
        infphys::journal::read_journal(path)
            .unwrap()
            .requests
            .height()
    };
    let settled = rows(&path);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(rows(&path), settled);
    let _ = std::fs::remove_dir_all(folder);
}

#[tokio::test]
async fn stop_signal_returns_partial_rows() {
    let url = serve_replies_after(Duration::from_millis(20)).await;
    let folder = std::env::temp_dir().join(format!("infphys-stop-{}", std::process::id()));
    let path = folder.join("requests.jsonl");
    let journal = infphys::journal::Journal::create(&path).unwrap();
    let stop = infphys::StopSignal::new();
    let client = client_for(&url, None)
        .with_journal(journal)
        .with_stop(stop.clone());

    // Raise the signal once five rows are on disk, as Ctrl-C in the CLI does; bounded by 1,000
    // polls of 10 ms.
    let watcher = {
        let path = path.clone();
        tokio::spawn(async move {
            for _ in 0..1000 {
                let rows = std::fs::read_to_string(&path)
                    .map(|text| text.matches("\"request_id\"").count())
                    .unwrap_or(0);
                if rows >= 5 {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            stop.stop();
        })
    };
    let request = ChatRequest::new("hi", 8);
    let sweep = infphys::sweep(&client, &[2, 4, 8], 10_000, &request, Progress::Silent)
        .await
        .unwrap();
    watcher.await.unwrap();

    // The first level is cut short and the later levels never run.
    assert_eq!(sweep.runs.len(), 1);
    assert!(sweep.is_partial());
    let run = &sweep.runs[0];
    assert!(run.interrupted);
    assert!(run.records.len() >= 5, "{} rows", run.records.len());
    assert!(run.records.len() < 10_000);
    assert_eq!(
        run.total_requests,
        run.records.len(),
        "the total counts finished requests"
    );
    let summary = sweep.summary_frame().unwrap();
    let partial = summary.column(schema::PARTIAL).unwrap().bool().unwrap();
    assert_eq!(partial.get(0), Some(true));

    // The journal has exactly the rows the run returned, and marks the run interrupted.
    let contents = infphys::journal::read_journal(&path).unwrap();
    assert_eq!(contents.requests.height(), run.records.len());
    assert_eq!(
        contents.partial_runs(),
        vec![("c=2".to_owned(), run.records.len(), Some(10_000))]
    );
    let _ = std::fs::remove_dir_all(folder);
}
