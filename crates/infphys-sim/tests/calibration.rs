//! Calibration of the GPU presets against published benchmark tables.
//!
//! Each run drives the virtual-time engine directly the way the published
//! benchmark drove its server, then prints published, simulated and ratio
//! side by side (`cargo test --release --test calibration -- --nocapture --test-threads=1`).
//! docs/calibration.md records the tables, the sources and the misses.

use std::time::Duration;

use infphys_sim::engine::{ClosedLoop, Engine, EngineRequest, RequestId, run_closed_loop};
use infphys_sim::{Physics, Preset};
use rand::SeedableRng;
use rand::rngs::StdRng;
use rand_distr::{Distribution, Exp};

/// A closed-loop benchmark in the style of genai-perf and `vllm bench serve`:
/// all clients send their first request at time 0, and each client sends its
/// next request as soon as the previous response ends.
#[derive(Debug, Clone)]
struct Benchmark {
    concurrency: usize,
    prompt_tokens: usize,
    /// Exact completion length, as `ignore_eos` with a fixed `max_tokens` gives.
    output_tokens: usize,
    /// Total requests to send; `usize::MAX` sends until the window ends.
    requests: usize,
    /// Requests sent before this virtual time are not measured.
    warmup: Duration,
    /// Length of the measurement window after the warmup.
    window: Duration,
    /// Mean of the exponential delay that the client and the HTTP front end
    /// add to each request, on top of the preset's fixed HTTP overhead.
    frontend_delay_mean: Duration,
}

/// Client-side metrics as genai-perf defines them.
#[derive(Debug, Clone, Copy)]
struct Metrics {
    /// Mean time to first token in seconds.
    ttft: f64,
    /// Mean over requests of `(latency - ttft) / (output tokens - 1)`, in seconds.
    itl: f64,
    /// Output tokens of the measured requests divided by the span from the
    /// first measured send to the last measured response.
    tokens_per_second: f64,
}

/// Runs `bench` on a fresh engine entirely in virtual time.
fn run_benchmark(physics: &Physics, seed: u64, bench: &Benchmark) -> Metrics {
    let mut engine = Engine::new(physics.clone(), seed, None);
    let http_overhead = physics.http_overhead;
    let window_end = bench.warmup + bench.window;
    let mut delay_rng = StdRng::seed_from_u64(seed ^ 0x0c1e_a7ed);
    let delay = (!bench.frontend_delay_mean.is_zero()).then(|| {
        Exp::new(1.0 / bench.frontend_delay_mean.as_secs_f64()).expect("the delay mean is positive")
    });

    let mut sent_at: Vec<Duration> = Vec::new();
    let mut send = |engine: &mut Engine, sent_at: &mut Vec<Duration>, at: Duration| {
        let id = sent_at.len() as RequestId;
        sent_at.push(at);
        let extra = delay.map_or(Duration::ZERO, |delay| {
            Duration::from_secs_f64(delay.sample(&mut delay_rng))
        });
        engine.submit(EngineRequest {
            id,
            prompt_tokens: bench.prompt_tokens,
            max_tokens: bench.output_tokens,
            enqueue_at: at + http_overhead + extra,
            fixed_output_tokens: Some(bench.output_tokens),
        });
    };
    for _ in 0..bench.concurrency.min(bench.requests) {
        send(&mut engine, &mut sent_at, Duration::ZERO);
    }

    let mut in_flight = sent_at.len();
    let mut ttfts = Vec::new();
    let mut itls = Vec::new();
    let mut tokens = 0usize;
    let mut first_sent: Option<Duration> = None;
    let mut last_done = Duration::ZERO;
    while in_flight > 0 {
        if !engine.has_work() {
            let arrival = engine
                .next_arrival()
                .expect("in-flight requests are queued");
            engine.advance_to(arrival);
        }
        for finished in engine.step().finished {
            in_flight -= 1;
            let sent = sent_at[finished.id as usize];
            let first_token = finished.token_times[0];
            let done = *finished
                .token_times
                .last()
                .expect("a finished request has a token");
            let count = finished.token_times.len();
            if sent >= bench.warmup && done <= window_end {
                ttfts.push((first_token - sent).as_secs_f64());
                if count > 1 {
                    itls.push((done - first_token).as_secs_f64() / (count - 1) as f64);
                }
                tokens += count;
                first_sent = Some(first_sent.map_or(sent, |first| first.min(sent)));
                last_done = last_done.max(done);
            }
            if done < window_end && sent_at.len() < bench.requests {
                send(&mut engine, &mut sent_at, done);
                in_flight += 1;
            }
        }
    }

    let mean = |values: &[f64]| values.iter().sum::<f64>() / values.len() as f64;
    let span = last_done - first_sent.expect("at least one request was measured");
    Metrics {
        ttft: mean(&ttfts),
        itl: mean(&itls),
        tokens_per_second: tokens as f64 / span.as_secs_f64(),
    }
}

/// One row of a published table. A `None` metric was not published.
#[derive(Debug, Clone, Copy)]
struct Published {
    concurrency: usize,
    ttft: Option<f64>,
    itl: Option<f64>,
    tokens_per_second: f64,
}

/// NIM 1.8.0, Llama-3.1-8b-instruct on one H100 80GB, 200 input and 200
/// output tokens, from <https://docs.nvidia.com/nim/benchmarking/llm/1.0.0/performance>.
const H100_NIM: [Published; 4] = [
    Published {
        concurrency: 1,
        ttft: Some(10.26e-3),
        itl: Some(4.63e-3),
        tokens_per_second: 214.56,
    },
    Published {
        concurrency: 25,
        ttft: Some(36.34e-3),
        itl: Some(5.19e-3),
        tokens_per_second: 4678.88,
    },
    Published {
        concurrency: 100,
        ttft: Some(119.97e-3),
        itl: Some(7.57e-3),
        tokens_per_second: 12214.97,
    },
    Published {
        concurrency: 200,
        ttft: Some(465.18e-3),
        itl: Some(12.65e-3),
        tokens_per_second: 13348.4,
    },
];

/// The other rows of the same NIM 1.8.0 table: concurrency 5, 50, 150 and 250.
/// The preset was not fitted to them, so they check whether the fit still
/// matches between and beyond the four fitted rows.
const H100_NIM_UNFITTED: [Published; 4] = [
    Published {
        concurrency: 5,
        ttft: Some(16.8e-3),
        itl: Some(4.58e-3),
        tokens_per_second: 1077.0,
    },
    Published {
        concurrency: 50,
        ttft: Some(67.4e-3),
        itl: Some(5.91e-3),
        tokens_per_second: 8018.0,
    },
    Published {
        concurrency: 150,
        ttft: Some(346.5e-3),
        itl: Some(9.81e-3),
        tokens_per_second: 12989.0,
    },
    Published {
        concurrency: 250,
        ttft: Some(605.6e-3),
        itl: Some(16.14e-3),
        tokens_per_second: 12965.0,
    },
];

/// genai-perf in concurrency mode as the NIM guide runs it: synthetic
/// 200-token prompts with standard deviation 0, `max_tokens` and
/// `min_tokens` 200 with `ignore_eos`, all clients started together.
/// Measuring 30 s after a 10 s warmup approximates perf_analyzer's
/// stable measurement windows.
fn nim_benchmark(concurrency: usize) -> Benchmark {
    Benchmark {
        concurrency,
        prompt_tokens: 200,
        output_tokens: 200,
        requests: usize::MAX,
        warmup: Duration::from_secs(10),
        window: Duration::from_secs(30),
        frontend_delay_mean: NIM_FRONTEND_DELAY_MEAN,
    }
}

/// Mean random delay of the genai-perf client and the NIM HTTP front end, an
/// estimate. It spreads the arrivals of clients that finished in the same
/// step over about a millisecond. Between 0 and 4 ms it moves the
/// concurrency-1 TTFT from 0.92x to 1.27x and the concurrency-25 TTFT from
/// 4.0x to 3.2x, and leaves ITL and throughput within 3% (parameter search).
const NIM_FRONTEND_DELAY_MEAN: Duration = Duration::from_millis(1);

/// `vllm bench serve` as the A100 source ran it: 1024 random prompt tokens,
/// 128 output tokens with `--ignore-eos`, `--max-concurrency C`, `20 * C`
/// prompts at request rate inf, all measured.
fn vllm_bench_a100(concurrency: usize) -> Benchmark {
    Benchmark {
        concurrency,
        prompt_tokens: 1024,
        output_tokens: 128,
        requests: 20 * concurrency,
        warmup: Duration::ZERO,
        window: Duration::from_secs(3600),
        frontend_delay_mean: Duration::ZERO,
    }
}

/// Output tokens/s of Llama-3.1-8B-Instruct in BF16 on one A100 40GB with
/// vLLM 0.23.0, from "vLLM throughput-latency sweep on NVIDIA A100",
/// <https://johnmusgrave.com/p/vllm-throughput-latency-sweep-on>. The post
/// gives about 75 tokens/s at concurrency 1 and a 6.6x gain at 8; it lists
/// no TTFT or ITL in the part quoted here.
const A100_40GB_VLLM: [Published; 2] = [
    Published {
        concurrency: 1,
        ttft: None,
        itl: Some(1.0 / 75.0),
        tokens_per_second: 75.0,
    },
    Published {
        concurrency: 8,
        ttft: None,
        itl: None,
        tokens_per_second: 6.6 * 75.0,
    },
];

/// Returns the A100 preset with its memory-bound terms slowed from the
/// 80GB SXM bandwidth (2.04 TB/s) to the 40GB one (1.56 TB/s).
fn a100_40gb() -> Physics {
    let physics = Preset::A100.physics();
    let slowdown = 2.039 / 1.555;
    Physics {
        weight_stream: physics.weight_stream.mul_f64(slowdown),
        per_kv_token: physics.per_kv_token.mul_f64(slowdown),
        ..physics
    }
}

/// Simulated-to-published ratio of one metric, or `None` if it was not published.
fn ratio(simulated: f64, published: Option<f64>) -> Option<f64> {
    published.map(|published| simulated / published)
}

/// Prints published, simulated and ratio for each row and returns the simulated metrics.
fn print_table(title: &str, physics: &Physics, rows: &[(Published, Benchmark)]) -> Vec<Metrics> {
    let format_ms =
        |value: Option<f64>| value.map_or("-".to_string(), |v| format!("{:.1}", v * 1e3));
    let format_ratio = |value: Option<f64>| value.map_or("-".to_string(), |v| format!("{v:.2}"));
    eprintln!("{title}");
    eprintln!(
        "{:>4} | {:>8} {:>8} {:>5} | {:>7} {:>7} {:>5} | {:>8} {:>8} {:>5}",
        "c", "TTFT pub", "sim ms", "ratio", "ITL pub", "sim ms", "ratio", "tok/s", "sim", "ratio"
    );
    let mut simulated = Vec::new();
    for (published, bench) in rows {
        let metrics = run_benchmark(physics, 1, bench);
        eprintln!(
            "{:>4} | {:>8} {:>8.1} {:>5} | {:>7} {:>7.2} {:>5} | {:>8.0} {:>8.0} {:>5.2}",
            published.concurrency,
            format_ms(published.ttft),
            metrics.ttft * 1e3,
            format_ratio(ratio(metrics.ttft, published.ttft)),
            format_ms(published.itl),
            metrics.itl * 1e3,
            format_ratio(ratio(metrics.itl, published.itl)),
            published.tokens_per_second,
            metrics.tokens_per_second,
            metrics.tokens_per_second / published.tokens_per_second,
        );
        simulated.push(metrics);
    }
    simulated
}

const BAND: std::ops::RangeInclusive<f64> = 0.85..=1.15;

/// Runs the NIM benchmark of each published row on the h100 preset and prints the table.
fn simulate_nim_rows(title: &str, table: &[Published]) -> Vec<Metrics> {
    let rows: Vec<_> = table
        .iter()
        .map(|published| (*published, nim_benchmark(published.concurrency)))
        .collect();
    print_table(title, &Preset::H100.physics(), &rows)
}

/// Asserts that ITL and output throughput are within [`BAND`] of the published row.
fn assert_decode_in_band(published: &Published, metrics: &Metrics) {
    let concurrency = published.concurrency;
    let itl = ratio(metrics.itl, published.itl).unwrap();
    assert!(BAND.contains(&itl), "ITL at {concurrency} is {itl:.2}x");
    let throughput = metrics.tokens_per_second / published.tokens_per_second;
    assert!(
        BAND.contains(&throughput),
        "throughput at {concurrency} is {throughput:.2}x"
    );
}

#[test]
fn h100_matches_nim_table() {
    let simulated = simulate_nim_rows("h100 vs NIM 1.8.0 (genai-perf, 200/200 tokens)", &H100_NIM);

    for (published, metrics) in H100_NIM.iter().zip(&simulated) {
        assert_decode_in_band(published, metrics);

        let concurrency = published.concurrency;
        let ttft = ratio(metrics.ttft, published.ttft).unwrap();
        if concurrency == 25 || concurrency == 100 {
            // NOTE: with every client started together and fixed lengths, the
            // simulated clients stay in one burst, so 25 or 100 prompts share
            // one prefill step and TTFT is about 3x the published value. The
            // published 36 and 120 ms imply the real clients spread over several
            // steps, which the model does not reproduce (docs/calibration.md).
            assert!(
                (1.0..=4.0).contains(&ttft),
                "TTFT at {concurrency} is {ttft:.2}x, outside the documented 1x to 4x"
            );
        } else {
            assert!(BAND.contains(&ttft), "TTFT at {concurrency} is {ttft:.2}x");
        }
    }
}

#[test]
fn h100_holds_on_unfitted_nim_rows() {
    let simulated = simulate_nim_rows(
        "h100 vs NIM 1.8.0, rows not used in the fit",
        &H100_NIM_UNFITTED,
    );

    for (published, metrics) in H100_NIM_UNFITTED.iter().zip(&simulated) {
        assert_decode_in_band(published, metrics);

        // NOTE: TTFT misses here for the same reason as at 25 and 100: 1.5x at 5,
        // 3.5x at 50 and 0.7x at 250. Only the documented spread is checked.
        let concurrency = published.concurrency;
        let ttft = ratio(metrics.ttft, published.ttft).unwrap();
        assert!(
            (0.5..=4.0).contains(&ttft),
            "TTFT at {concurrency} is {ttft:.2}x, outside the documented 0.5x to 4x"
        );
    }
}

#[test]
fn a100_matches_vllm_sweep() {
    let physics = a100_40gb();
    let rows: Vec<_> = A100_40GB_VLLM
        .iter()
        .map(|published| (*published, vllm_bench_a100(published.concurrency)))
        .collect();
    let simulated = print_table(
        "a100 scaled to 40GB vs vLLM 0.23.0 sweep (1024/128 tokens)",
        &physics,
        &rows,
    );

    for (published, metrics) in A100_40GB_VLLM.iter().zip(&simulated) {
        let concurrency = published.concurrency;
        let throughput = metrics.tokens_per_second / published.tokens_per_second;
        assert!(
            BAND.contains(&throughput),
            "throughput at {concurrency} is {throughput:.2}x"
        );
        if let Some(itl) = ratio(metrics.itl, published.itl) {
            assert!(BAND.contains(&itl), "ITL at {concurrency} is {itl:.2}x");
        }
    }
}

/// Grid over the constants that the NIM table constrains most, printing the
/// ratio of every cell, the cells within 15% and the worst cell, best rows first.
#[test]
#[ignore = "parameter search; run with --release -- --ignored --nocapture"]
fn h100_parameter_search() {
    let mut rows = Vec::new();
    for budget in [4096usize, 8192] {
        for per_token_us in [20u64, 25, 28, 30, 32] {
            for per_seq_us in [5u64, 10] {
                for delay_us in [0u64, 1000, 4000] {
                    let physics = Physics {
                        max_batched_tokens: budget,
                        per_token: Duration::from_micros(per_token_us),
                        per_seq: Duration::from_micros(per_seq_us),
                        ..Preset::H100.physics()
                    };
                    let mut worst = 0.0f64;
                    let mut in_band = 0;
                    let mut cells = String::new();
                    for published in H100_NIM {
                        let bench = Benchmark {
                            frontend_delay_mean: Duration::from_micros(delay_us),
                            ..nim_benchmark(published.concurrency)
                        };
                        let metrics = run_benchmark(&physics, 1, &bench);
                        let ratios = [
                            ratio(metrics.ttft, published.ttft).unwrap(),
                            ratio(metrics.itl, published.itl).unwrap(),
                            metrics.tokens_per_second / published.tokens_per_second,
                        ];
                        for value in ratios {
                            worst = worst.max(value.ln().abs());
                            in_band += usize::from(BAND.contains(&value));
                        }
                        cells += &format!(" | {:.2} {:.2} {:.2}", ratios[0], ratios[1], ratios[2]);
                    }
                    rows.push((
                        in_band,
                        worst.exp(),
                        format!(
                            "budget {budget:>4} t_tok {per_token_us:>2}us c_seq {per_seq_us:>2}us delay {delay_us:>4}us{cells}"
                        ),
                    ));
                }
            }
        }
    }
    // Most cells within 15% first, then the smallest worst-cell error.
    rows.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.total_cmp(&b.1)));
    eprintln!("in band | worst | constants | c=1 TTFT ITL tok/s | c=25 | c=100 | c=200 (ratios)");
    for (in_band, worst, row) in &rows {
        eprintln!("{in_band:>2}/12 {worst:.2} {row}");
    }
}

/// Requests/s of the lab's quick sweep (16 requests per level, `max_tokens`
/// 96, 60 s timeout) against a llama.cpp server with 8 slots and one CPU
/// thread serving SmolLM2-135M-Instruct in Q4_1. `infphys lab --quick` measured it on a
/// 2-core machine that other jobs loaded (load average 3 to 4).
const LLAMA_CPP_SWEEP: [(usize, f64); 5] =
    [(1, 0.954), (2, 0.869), (4, 0.735), (8, 0.934), (16, 0.809)];

/// Returns a simulated server fitted to that llama.cpp server.
///
/// One CPU thread is compute-bound even for one sequence, so a step costs
/// 11.5 ms per token whatever the batch: `weight_stream` equals `per_token`,
/// and batching gains nothing. That per-token time and the lab's mean
/// single-request latency of about 1.0 s for 87 output tokens fix the
/// constant. Completion lengths follow a lognormal with median 105 and sigma
/// 0.25, which puts 63% of replies at the 96-token cap and the rest between
/// about 63 and 95 tokens, as in the lab's requests.
fn llama_cpp_smollm2() -> Physics {
    Physics {
        weight_stream: Duration::from_micros(11_500),
        per_token: Duration::from_micros(11_500),
        step_overhead: Duration::ZERO,
        per_seq: Duration::ZERO,
        per_kv_token: Duration::ZERO,
        prefill_attention: Duration::ZERO,
        http_overhead: Duration::from_millis(3),
        max_num_seqs: 8,
        max_batched_tokens: 2048,
        // `-c 16384` shared by the 8 slots, so 2048 tokens each.
        kv_capacity_tokens: 16_384,
        kv_block_tokens: 16,
        max_model_len: 2048,
        jitter_sigma: 0.03,
        output_len_median: 105.0,
        output_len_sigma: 0.25,
    }
}

/// Returns the index of the first level after which throughput rises by less
/// than 10%, or the last index if it keeps rising.
fn saturation_index(throughputs: &[f64]) -> usize {
    (0..throughputs.len() - 1)
        .find(|&index| throughputs[index + 1] < 1.1 * throughputs[index])
        .unwrap_or(throughputs.len() - 1)
}

#[test]
fn llama_cpp_fit_saturates_like_server() {
    let physics = llama_cpp_smollm2();
    let mut simulated = Vec::new();
    eprintln!("llama.cpp (8 slots, 1 thread, SmolLM2-135M) vs fitted simulator, lab quick sweep");
    eprintln!(
        "{:>4} | {:>10} {:>10} {:>5}",
        "c", "real req/s", "sim req/s", "ratio"
    );
    for (concurrency, measured) in LLAMA_CPP_SWEEP {
        let outcomes = run_closed_loop(
            &physics,
            1,
            &ClosedLoop {
                concurrency,
                requests: 16,
                // The lab sends the same 35-token prompt every time, and
                // llama.cpp reuses 34 of its tokens from the slot's cache.
                prompt_tokens: 1,
                max_tokens: 96,
                timeout: Some(Duration::from_secs(60)),
            },
        );
        let span = outcomes
            .iter()
            .map(|outcome| outcome.done_at)
            .max()
            .unwrap();
        let ok = outcomes.iter().filter(|outcome| !outcome.timed_out).count();
        let throughput = ok as f64 / span.as_secs_f64();
        eprintln!(
            "{concurrency:>4} | {measured:>10.3} {throughput:>10.3} {:>5.2}",
            throughput / measured
        );
        simulated.push(throughput);
    }

    let measured: Vec<f64> = LLAMA_CPP_SWEEP.iter().map(|(_, rps)| *rps).collect();
    let real_knee = saturation_index(&measured);
    let simulated_knee = saturation_index(&simulated);
    eprintln!(
        "saturation: real at c={}, simulated at c={}",
        LLAMA_CPP_SWEEP[real_knee].0, LLAMA_CPP_SWEEP[simulated_knee].0
    );
    assert!(
        real_knee.abs_diff(simulated_knee) <= 1,
        "saturation at c={} simulated, c={} measured",
        LLAMA_CPP_SWEEP[simulated_knee].0,
        LLAMA_CPP_SWEEP[real_knee].0
    );
    let single = simulated[0] / measured[0];
    assert!(
        BAND.contains(&single),
        "single-client throughput is {single:.2}x the measured value"
    );
}
