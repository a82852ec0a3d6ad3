//! Hardware presets and the physical constants of the step-time model.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use crate::SimError;

/// Constants of the continuous-batching model of one GPU serving one model.
///
/// One engine step processes `N` tokens for `B` sequences and takes
///
/// ```text
/// T = step_overhead + max(weight_stream, per_token * N) + per_seq * B
///     + per_kv_token * K + prefill_attention * sum(n_i * (ctx_i + n_i / 2))
/// ```
///
/// where `K` is the total context of the decoding sequences in the step and
/// `n_i`, `ctx_i` are the size of a prefill chunk and the context it attends
/// to. `T` is then multiplied by lognormal jitter with median 1 and sigma
/// [`jitter_sigma`](Self::jitter_sigma).
///
/// All spans are virtual time. [`Duration`] has 1 ns resolution, so the
/// smallest per-token costs are stored rounded to whole nanoseconds.
#[derive(Debug, Clone, PartialEq)]
pub struct Physics {
    /// Time to stream the model weights from GPU memory once (`W`): the
    /// memory-bound floor of every step.
    pub weight_stream: Duration,
    /// Compute time per processed token (`t_tok`): the compute-bound slope
    /// once `per_token * N` exceeds `weight_stream`.
    pub per_token: Duration,
    /// Fixed per-step overhead of scheduler, kernel launches and sampling (`c0`).
    pub step_overhead: Duration,
    /// Per-sequence cost in a step, such as sampling and bookkeeping (`c_seq`).
    pub per_seq: Duration,
    /// Decode attention cost per cached token read (`c_kv`).
    pub per_kv_token: Duration,
    /// Prefill attention cost per (token, context token) pair (`c_pf`).
    pub prefill_attention: Duration,
    /// HTTP parsing and tokenization time before a request enters the queue.
    pub http_overhead: Duration,
    /// Maximum number of sequences running in one step (vLLM `max_num_seqs`).
    pub max_num_seqs: usize,
    /// Token budget of one step (vLLM `max_num_batched_tokens`); longer
    /// prompts are prefilled in chunks.
    pub max_batched_tokens: usize,
    /// KV-cache capacity in tokens.
    pub kv_capacity_tokens: usize,
    /// Tokens per KV-cache block (vLLM `block_size`).
    pub kv_block_tokens: usize,
    /// Maximum prompt plus completion length in tokens (vLLM `max_model_len`).
    pub max_model_len: usize,
    /// Sigma of the lognormal step-time jitter (median 1); 0 disables jitter.
    pub jitter_sigma: f64,
    /// Median natural completion length in tokens, before `max_tokens` clipping.
    pub output_len_median: f64,
    /// Sigma of the lognormal natural completion length.
    pub output_len_sigma: f64,
}

impl Physics {
    /// Returns the number of KV-cache blocks, `kv_capacity_tokens / kv_block_tokens`.
    pub fn kv_blocks(&self) -> usize {
        self.kv_capacity_tokens / self.kv_block_tokens.max(1)
    }
}

/// Named hardware configuration of the simulated server.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Preset {
    /// A small 24 GB GPU (L4 class, about 300 GB/s) serving Llama-3.1-8B in
    /// fp8 with at most 4 concurrent sequences, so that saturation, queueing
    /// and timeouts appear at the concurrencies of the lab's grid (1 to 16).
    ///
    /// The constants are estimates from first principles, not measurements.
    /// Streaming 8 GB of fp8 weights at about 270 GB/s effective bandwidth
    /// takes 30 ms per step. At 16 GFLOP per token and about 120 TFLOP/s
    /// effective fp8 throughput, compute costs 0.13 ms per token. Reading a
    /// bf16 KV entry of 128 KiB at 300 GB/s costs 0.44 µs per cached token.
    /// The KV cache keeps about 7.5 GB (60k tokens) after weights and
    /// activations.
    ///
    /// The knee falls inside the grid on purpose. A step of up to 4 decoding
    /// sequences stays memory-bound at about 31 ms, so a 96-token reply takes
    /// about 3 s alone, and throughput stops rising at concurrency 4 because
    /// `max_num_seqs` is 4. From 8 clients on, requests wait in the queue for
    /// at least one whole reply, so with the lab's 5 s timeout concurrency 4
    /// never times out while 8 and above do.
    #[default]
    Classroom,
    /// Llama-3.1-8B-Instruct on one H100 80GB SXM, fitted to NIM 1.8.0.
    ///
    /// Source: "Performance" in the NIM LLM benchmarking guide,
    /// <https://docs.nvidia.com/nim/benchmarking/llm/1.0.0/performance>,
    /// Llama-3.1-8b-instruct, NIM 1.8.0, 200 input and 200 output tokens,
    /// measured with genai-perf in concurrency mode. At concurrency 1, 25, 100
    /// and 200 it lists TTFT 10.3, 36, 120 and 465 ms, ITL 4.6, 5.2, 7.6 and
    /// 12.7 ms, and 215, 4 679, 12 215 and 13 348 output tokens/s.
    ///
    /// The test `h100_matches_nim_table` in `tests/calibration.rs` runs the
    /// benchmark as genai-perf does: all clients start together, and every
    /// request has 200 prompt tokens and exactly 200 output tokens
    /// (`ignore_eos`). It gives TTFT 10.4, 126, 343 and 415 ms, ITL 4.6, 5.0,
    /// 7.0 and 12.5 ms, and 215, 4 456, 11 480 and 13 428 tokens/s. Every
    /// cell is within 15% except TTFT at 25 and 100, which is about 3x too
    /// high. The clients there stay in one burst whose prompts share one
    /// prefill step, while the published TTFT implies the real clients spread
    /// over several steps.
    ///
    /// The concurrency-1 ITL of 4.6 ms bounds one decode step, so the fitted
    /// weight-streaming time is 3.8 ms. That is below the 4.8 ms that 16 GB
    /// of bf16 weights at 3.35 TB/s would need, and the fitted KV read of
    /// 25 ns per cached token is likewise faster than a 128 KiB bf16 entry
    /// allows. Both fit the fp8 engine that NIM lists for H100. The compute
    /// slope of 28 µs per token, 16 GFLOP per token at about 570 TFLOP/s, is
    /// fitted mainly to concurrency 200. There the 40 000 prompt tokens of
    /// each burst fill five 8 192-token steps of about 230 ms each, which
    /// sets the TTFT. The KV cache holds about 430k tokens.
    H100,
    /// Llama-3.1-8B-Instruct in bf16 on one A100 80GB SXM.
    ///
    /// Source: "vLLM throughput-latency sweep on NVIDIA A100",
    /// <https://johnmusgrave.com/p/vllm-throughput-latency-sweep-on>. It ran
    /// Llama-3.1-8B-Instruct in bf16 with vLLM 0.23.0 on one A100 40GB,
    /// 1024 prompt and 128 output tokens with `--ignore-eos`, and reports
    /// about 75 output tokens/s at concurrency 1 (77% of the bandwidth bound)
    /// and a 6.6x gain at concurrency 8. No comparable A100 80GB table with
    /// 200/200 tokens was found, so the memory-bound terms are fitted to that
    /// source and scaled from 1.56 to 2.04 TB/s. Streaming 16 GB of bf16
    /// weights then takes 9.6 ms, and a cached token costs 42 ns to read. The
    /// test `a100_matches_vllm_sweep` slows these terms back to 40GB
    /// bandwidth and gives 72 and 447 tokens/s, 0.96x and 0.90x the source.
    ///
    /// The compute slope of 60 µs per token is 16 GFLOP per token at about
    /// 270 TFLOP/s, 85% of the dense bf16 peak of 312 TFLOP/s. That is
    /// optimistic, but a slower slope falls below the source's gain at 8.
    /// The KV cache holds about 400k tokens.
    A100,
}

impl Preset {
    /// Returns the lowercase name used on the command line and in [`FromStr`].
    pub fn name(&self) -> &'static str {
        match self {
            Preset::Classroom => "classroom",
            Preset::H100 => "h100",
            Preset::A100 => "a100",
        }
    }

    /// Returns every preset, default first.
    pub fn all() -> &'static [Preset] {
        &[Preset::Classroom, Preset::H100, Preset::A100]
    }

    /// Returns a one-line description for help text.
    pub fn description(&self) -> &'static str {
        match self {
            Preset::Classroom => {
                "small 24 GB GPU serving Llama-3.1-8B fp8, at most 4 concurrent sequences (about 3 s per 96-token reply)"
            }
            Preset::H100 => {
                "one H100 80GB serving Llama-3.1-8B, fitted to published NIM 1.8 latency-throughput numbers"
            }
            Preset::A100 => {
                "one A100 80GB serving Llama-3.1-8B in bf16, fitted to a published vLLM sweep on A100 40GB scaled by bandwidth"
            }
        }
    }

    /// Returns the physical constants of this preset.
    pub fn physics(&self) -> Physics {
        match self {
            Preset::Classroom => Physics {
                weight_stream: Duration::from_millis(30),
                per_token: Duration::from_micros(130),
                step_overhead: Duration::from_millis(1),
                per_seq: Duration::from_micros(20),
                per_kv_token: Duration::from_nanos(440),
                prefill_attention: Duration::from_nanos(9),
                http_overhead: Duration::from_millis(3),
                max_num_seqs: 4,
                max_batched_tokens: 2048,
                kv_capacity_tokens: 60_000,
                kv_block_tokens: 16,
                max_model_len: 8192,
                jitter_sigma: 0.03,
                output_len_median: 180.0,
                output_len_sigma: 0.5,
            },
            Preset::H100 => Physics {
                weight_stream: Duration::from_micros(3800),
                per_token: Duration::from_micros(28),
                step_overhead: Duration::from_micros(800),
                per_seq: Duration::from_micros(5),
                per_kv_token: Duration::from_nanos(25),
                // 2.7 ns per pair, rounded to the 1 ns resolution of Duration.
                prefill_attention: Duration::from_nanos(3),
                http_overhead: Duration::from_millis(3),
                max_num_seqs: 1024,
                max_batched_tokens: 8192,
                kv_capacity_tokens: 430_000,
                kv_block_tokens: 16,
                max_model_len: 131_072,
                jitter_sigma: 0.03,
                output_len_median: 180.0,
                output_len_sigma: 0.5,
            },
            Preset::A100 => Physics {
                weight_stream: Duration::from_micros(9600),
                per_token: Duration::from_micros(60),
                step_overhead: Duration::from_micros(800),
                per_seq: Duration::from_micros(5),
                per_kv_token: Duration::from_nanos(42),
                prefill_attention: Duration::from_nanos(7),
                http_overhead: Duration::from_millis(3),
                max_num_seqs: 1024,
                max_batched_tokens: 8192,
                kv_capacity_tokens: 400_000,
                kv_block_tokens: 16,
                max_model_len: 131_072,
                jitter_sigma: 0.03,
                output_len_median: 180.0,
                output_len_sigma: 0.5,
            },
        }
    }
}

impl fmt::Display for Preset {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Preset {
    type Err = SimError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let requested = s.trim();
        Preset::all()
            .iter()
            .copied()
            .find(|preset| preset.name().eq_ignore_ascii_case(requested))
            .ok_or_else(|| SimError::UnknownPreset {
                name: s.to_string(),
            })
    }
}

/// Returns the valid preset names joined for error messages, such as "classroom, h100, a100".
pub(crate) fn preset_names() -> String {
    Preset::all()
        .iter()
        .map(Preset::name)
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn preset_parses_case_insensitively() {
        assert_eq!("H100".parse::<Preset>().unwrap(), Preset::H100);
        assert_eq!("classroom".parse::<Preset>().unwrap(), Preset::Classroom);
        assert_eq!(" a100 ".parse::<Preset>().unwrap(), Preset::A100);
    }

    #[test]
    fn unknown_preset_lists_valid_names() {
        let message = "b200".parse::<Preset>().unwrap_err().to_string();
        assert!(message.contains("b200"), "{message}");
        assert!(message.contains("classroom, h100, a100"), "{message}");
    }

    #[test]
    fn preset_names_round_trip() {
        for preset in Preset::all() {
            assert_eq!(preset.to_string().parse::<Preset>().unwrap(), *preset);
            assert!(!preset.description().is_empty());
        }
        assert_eq!(Preset::default(), Preset::Classroom);
    }

    #[test]
    fn presets_fit_max_model_len_in_kv_cache() {
        for preset in Preset::all() {
            let physics = preset.physics();
            assert!(physics.kv_blocks() * physics.kv_block_tokens >= physics.max_model_len);
        }
    }
}
