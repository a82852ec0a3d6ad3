//! Starting and stopping the server: spawn from sync and async code, router on a listener, bind errors.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use infphys_sim::{Preset, SimConfig, SimError};

/// Sends a bare HTTP/1.1 GET and returns the whole response text.
fn http_get(addr: std::net::SocketAddr, path: &str) -> String {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    response
}

#[test]
fn spawn_works_from_sync_code() {
    let server = infphys_sim::spawn(SimConfig::default()).unwrap();
    assert!(server.base_url().starts_with("http://127.0.0.1:"));
    assert!(!server.base_url().ends_with('/'));
    assert_eq!(server.base_url(), format!("http://{}", server.addr()));
    assert_eq!(server.config().preset, Preset::Classroom);
    let response = http_get(server.addr(), "/v1/health/ready");
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    let addr = server.addr();
    server.shutdown();
    assert!(
        TcpStream::connect(addr).is_err(),
        "the port is closed after shutdown"
    );
}

#[tokio::test]
async fn drop_inside_runtime_does_not_panic() {
    let server = infphys_sim::spawn(SimConfig::new(Preset::H100)).unwrap();
    let response = reqwest::get(format!("{}/v1/models", server.base_url()))
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    drop(server);
}

#[tokio::test]
async fn router_serves_on_listener() {
    let config = SimConfig {
        time_scale: 100.0,
        ..SimConfig::default()
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(infphys_sim::serve(config, listener, async {
        let _ = stopped.await;
    }));

    let response = reqwest::Client::new()
        .post(format!("http://{addr}/v1/chat/completions"))
        .json(
            &serde_json::json!({"messages": [{"role": "user", "content": "Reply with only: ok"}]}),
        )
        .timeout(Duration::from_secs(20))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let body: serde_json::Value = response.json().await.unwrap();
    assert_eq!(body["choices"][0]["message"]["content"], "ok");

    stop.send(()).unwrap();
    tokio::time::timeout(Duration::from_secs(10), server)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
}

#[test]
fn busy_port_is_bind_error() {
    let occupied = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let config = SimConfig {
        port: occupied.local_addr().unwrap().port(),
        ..SimConfig::default()
    };
    match infphys_sim::spawn(config) {
        Err(SimError::Bind { addr, .. }) => assert_eq!(addr, occupied.local_addr().unwrap()),
        other => panic!("expected a bind error, got {other:?}"),
    }
}

#[test]
fn invalid_config_is_rejected() {
    let config = SimConfig {
        time_scale: 0.0,
        ..SimConfig::default()
    };
    let error = infphys_sim::spawn(config).unwrap_err();
    assert!(matches!(error, SimError::InvalidConfig(_)), "{error}");
    assert!(error.to_string().contains("time_scale is 0"), "{error}");
}
