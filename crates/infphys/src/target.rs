//! Which server to measure: configuration from the environment, and the built-in simulator.
//!
//! [`TargetSpec::from_env`] reads `NIM_BASE_URL`, `NIM_CHAT_PATH`, `NIM_GEN_MODEL` and a bearer key
//! from `NIM_API_KEY` or `OPENAI_API_KEY`. [`resolve`] turns the spec into a [`Target`]: the
//! configured server when it responds, or the built-in simulator when `NIM_BASE_URL` is `sim`, or
//! when it is unset and nothing responds at the default address. An explicitly set URL that does
//! not respond is an error, never a silent fallback to the simulator.

use std::fmt;
#[cfg(feature = "sim")]
use std::sync::Arc;
use std::time::Duration;

use crate::error::{Error, Result, invalid};

/// Base URL used when `NIM_BASE_URL` is unset.
pub const DEFAULT_BASE_URL: &str = "http://localhost:8000";
/// Chat-completions path used when `NIM_CHAT_PATH` is unset.
pub const DEFAULT_CHAT_PATH: &str = "/v1/chat/completions";
/// Model name used when `NIM_GEN_MODEL` is unset.
pub const DEFAULT_MODEL: &str = "meta/llama-3.1-8b-instruct";
/// The `NIM_BASE_URL` value that selects the built-in simulator.
pub const SIMULATOR_URL: &str = "sim";

/// Timeout of the probe [`resolve`] sends to a server.
const PROBE_TIMEOUT: Duration = Duration::from_secs(3);

/// A bearer key. `Debug` and `Display` never show it.
#[derive(Clone, PartialEq, Eq)]
pub struct ApiKey(String);

impl ApiKey {
    /// Wraps a key.
    pub fn new(key: impl Into<String>) -> Self {
        Self(key.into())
    }

    pub(crate) fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ApiKey(<redacted>)")
    }
}

/// The value of `NIM_BASE_URL`: unset, the simulator, or a URL.
#[derive(Debug, Clone, PartialEq)]
pub enum BaseUrl {
    /// The variable is unset: try [`DEFAULT_BASE_URL`], and fall back to the simulator.
    Unset,
    /// The variable is `sim`: use the built-in simulator.
    Simulator,
    /// An explicit URL, without a trailing slash.
    Url(String),
}

/// Settings for the built-in simulator, read from `INFPHYS_SIM_PRESET`, `INFPHYS_TIME_SCALE` and
/// `INFPHYS_SIM_SEED`.
#[derive(Debug, Clone, PartialEq)]
pub struct SimOptions {
    /// Preset name: `classroom` (the default), `h100` or `a100`.
    pub preset: String,
    /// How much faster than real time the simulator runs; 1 is real time.
    pub time_scale: f64,
    /// Seed for the simulator's jitter and output lengths.
    pub seed: u64,
}

impl Default for SimOptions {
    fn default() -> Self {
        Self {
            preset: "classroom".to_owned(),
            time_scale: 1.0,
            seed: 0,
        }
    }
}

/// A target as configured, before anything is contacted.
#[derive(Debug, Clone, PartialEq)]
pub struct TargetSpec {
    /// The value of `NIM_BASE_URL`.
    pub base_url: BaseUrl,
    /// Path of the chat-completions endpoint, starting with `/`.
    pub chat_path: String,
    /// Model name sent in each request.
    pub model: String,
    /// Bearer key sent in the `Authorization` header, if any.
    pub api_key: Option<ApiKey>,
    /// Settings used when the target is the built-in simulator.
    pub sim: SimOptions,
}

impl Default for TargetSpec {
    fn default() -> Self {
        Self {
            base_url: BaseUrl::Unset,
            chat_path: DEFAULT_CHAT_PATH.to_owned(),
            model: DEFAULT_MODEL.to_owned(),
            api_key: None,
            sim: SimOptions::default(),
        }
    }
}

impl TargetSpec {
    /// Reads the spec from the process environment.
    pub fn from_env() -> Result<Self> {
        Self::from_lookup(|name| std::env::var(name).ok())
    }

    /// Reads the spec through `lookup`, which returns a variable's value or `None` when unset.
    /// Empty values count as unset.
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self> {
        let get = |name: &str| {
            lookup(name)
                .map(|v| v.trim().to_owned())
                .filter(|v| !v.is_empty())
        };
        let mut spec = Self::default();

        if let Some(url) = get("NIM_BASE_URL") {
            spec.base_url = parse_base_url(&url)?;
        }
        if let Some(path) = get("NIM_CHAT_PATH") {
            spec.chat_path = parse_chat_path(&path)?;
        }
        if let Some(model) = get("NIM_GEN_MODEL") {
            spec.model = model;
        }
        spec.api_key = get("NIM_API_KEY")
            .or_else(|| get("OPENAI_API_KEY"))
            .map(ApiKey);

        if let Some(preset) = get("INFPHYS_SIM_PRESET") {
            spec.sim.preset = preset;
        }
        if let Some(scale) = get("INFPHYS_TIME_SCALE") {
            spec.sim.time_scale = parse_time_scale(&scale)?;
        }
        if let Some(seed) = get("INFPHYS_SIM_SEED") {
            spec.sim.seed = seed.parse().map_err(|_| {
                invalid(
                    "INFPHYS_SIM_SEED",
                    &seed,
                    "expected a non-negative integer, for example 7",
                )
            })?;
        }
        Ok(spec)
    }
}

/// Parses a `NIM_BASE_URL` value: `sim`, or an `http://` or `https://` URL.
pub fn parse_base_url(value: &str) -> Result<BaseUrl> {
    let value = value.trim();
    if value.eq_ignore_ascii_case(SIMULATOR_URL) {
        return Ok(BaseUrl::Simulator);
    }

    let url = reqwest::Url::parse(value).map_err(|e| {
        if e.to_string().contains("relative URL without a base") {
            return invalid(
                "NIM_BASE_URL",
                value,
                format!("the scheme is missing; expected a URL such as http://{value}, or `sim`"),
            );
        }
        invalid(
            "NIM_BASE_URL",
            value,
            format!("{e}; expected a URL such as http://localhost:8000, or `sim`"),
        )
    })?;
    if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
        return Err(invalid(
            "NIM_BASE_URL",
            value,
            "expected an http:// or https:// URL with a host, such as http://localhost:8000, or `sim`",
        ));
    }
    Ok(BaseUrl::Url(value.trim_end_matches('/').to_owned()))
}

/// Parses a `NIM_CHAT_PATH` value, which must start with `/`.
pub fn parse_chat_path(value: &str) -> Result<String> {
    if !value.starts_with('/') {
        return Err(invalid(
            "NIM_CHAT_PATH",
            value,
            format!(
                "the path must start with '/', for example /{}",
                value.trim_start_matches('/')
            ),
        ));
    }
    Ok(value.to_owned())
}

/// Parses a time scale: a finite number greater than 0.
pub fn parse_time_scale(value: &str) -> Result<f64> {
    match value.parse::<f64>() {
        Ok(scale) if scale.is_finite() && scale > 0.0 => Ok(scale),
        _ => Err(invalid(
            "time scale",
            value,
            "expected a number greater than 0, for example 1 for real time or 20 to run 20 times faster",
        )),
    }
}

/// The kind of server a [`Target`] is.
#[derive(Debug, Clone, PartialEq)]
pub enum TargetKind {
    /// A server at a configured URL.
    Server,
    /// The built-in simulator, started in this process.
    Simulator {
        /// The simulator preset's name.
        preset: String,
    },
    /// An infphys simulator started elsewhere (`infphys sim`) and reached by URL. It names its
    /// preset and time scale in `GET /v1/models`, so durations are still reported in server
    /// time.
    RemoteSimulator {
        /// The simulator preset's name.
        preset: String,
    },
}

/// A server to measure, ready for requests.
///
/// A `Target` that runs the built-in simulator keeps it alive; the simulator stops when the last
/// clone of the target is dropped.
#[derive(Clone)]
pub struct Target {
    base_url: String,
    chat_path: String,
    model: String,
    api_key: Option<ApiKey>,
    kind: TargetKind,
    time_scale: f64,
    /// Model names the server lists at `GET /v1/models`. Empty when it lists none or was not probed.
    served_models: Vec<String>,
    #[cfg(feature = "sim")]
    _simulator: Option<Arc<infphys_sim::SimHandle>>,
}

impl fmt::Debug for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Target")
            .field("base_url", &self.base_url)
            .field("chat_path", &self.chat_path)
            .field("model", &self.model)
            .field("api_key", &self.api_key)
            .field("kind", &self.kind)
            .field("time_scale", &self.time_scale)
            .field("served_models", &self.served_models)
            .finish()
    }
}

impl Target {
    /// Creates a target for the server at `base_url`, without contacting it.
    pub fn server(
        base_url: &str,
        chat_path: &str,
        model: &str,
        api_key: Option<ApiKey>,
    ) -> Result<Self> {
        let BaseUrl::Url(base_url) = parse_base_url(base_url)? else {
            return Err(invalid(
                "NIM_BASE_URL",
                base_url,
                "use Target::simulator for the built-in simulator",
            ));
        };
        Ok(Self {
            base_url,
            chat_path: parse_chat_path(chat_path)?,
            model: model.to_owned(),
            api_key,
            kind: TargetKind::Server,
            time_scale: 1.0,
            served_models: Vec::new(),
            #[cfg(feature = "sim")]
            _simulator: None,
        })
    }

    /// Starts the built-in simulator in this process, on 127.0.0.1 and a free port.
    #[cfg(feature = "sim")]
    pub fn simulator(options: &SimOptions, model: &str) -> Result<Self> {
        let preset: infphys_sim::Preset = options
            .preset
            .parse()
            .map_err(|e| invalid("INFPHYS_SIM_PRESET", &options.preset, format!("{e}")))?;
        let mut config = infphys_sim::SimConfig::new(preset);
        config.time_scale = options.time_scale;
        config.seed = options.seed;
        config.model = model.to_owned();
        let handle = infphys_sim::spawn(config)?;

        Ok(Self {
            base_url: handle.base_url().to_owned(),
            chat_path: DEFAULT_CHAT_PATH.to_owned(),
            model: model.to_owned(),
            api_key: None,
            kind: TargetKind::Simulator {
                preset: preset.name().to_owned(),
            },
            time_scale: options.time_scale,
            served_models: vec![model.to_owned()],
            _simulator: Some(Arc::new(handle)),
        })
    }

    /// Records the models the probe found listed, and marks a server target as an infphys
    /// simulator when it is one, adopting its time scale so durations are in its server time.
    fn with_probe(mut self, probed: Probed) -> Self {
        self.served_models = probed.models;
        if let Some(simulator) = probed.simulator {
            self.kind = TargetKind::RemoteSimulator {
                preset: simulator.preset,
            };
            self.time_scale = simulator.time_scale;
        }
        self
    }

    /// Base URL without a trailing slash.
    pub fn base_url(&self) -> &str {
        &self.base_url
    }

    /// Full URL of the chat-completions endpoint.
    pub fn chat_url(&self) -> String {
        format!("{}{}", self.base_url, self.chat_path)
    }

    /// Model name sent with each request.
    pub fn model(&self) -> &str {
        &self.model
    }

    /// Returns the kind of server this is.
    pub fn kind(&self) -> &TargetKind {
        &self.kind
    }

    /// Returns whether this is the built-in simulator.
    pub fn is_simulator(&self) -> bool {
        matches!(self.kind, TargetKind::Simulator { .. })
    }

    pub(crate) fn api_key(&self) -> Option<&ApiKey> {
        self.api_key.as_ref()
    }

    /// How much faster than real time the server runs: the simulator's time scale, or 1 for a
    /// real server.
    ///
    /// Timeouts given to this library are in server time and are divided by the scale before
    /// they are applied; measured durations are multiplied by it before they are reported. At a
    /// scale of 1 both are unchanged. The client's own overhead is multiplied too, so at high
    /// scales the reported numbers carry the client's overhead magnified by the scale.
    pub fn time_scale(&self) -> f64 {
        self.time_scale
    }

    /// Converts a wall-clock span measured here into server time.
    pub fn to_server_time(&self, wall: Duration) -> Duration {
        wall.mul_f64(self.time_scale)
    }

    /// Converts a span in server time into the wall-clock span to wait here.
    pub fn to_wall_time(&self, server: Duration) -> Duration {
        server.div_f64(self.time_scale)
    }

    /// Returns a short label for result frames: the URL and model, or the simulator preset and scale.
    pub fn label(&self) -> String {
        match &self.kind {
            TargetKind::Server => format!("{} ({})", self.base_url, self.model),
            TargetKind::Simulator { preset } if self.time_scale == 1.0 => format!("sim:{preset}"),
            TargetKind::Simulator { preset } => format!("sim:{preset} x{}", self.time_scale),
            TargetKind::RemoteSimulator { preset } => {
                format!("{} (sim:{preset} x{})", self.base_url, self.time_scale)
            }
        }
    }

    /// Returns the model names the server listed at `GET /v1/models`, or an empty slice when it
    /// listed none or was not probed.
    pub fn served_models(&self) -> &[String] {
        &self.served_models
    }

    /// Returns a warning when the server lists its models and the configured one is not among
    /// them. vLLM, NIM and the simulator reject requests for an unlisted model with HTTP 404,
    /// while the llama.cpp server accepted the lab's default name in `docs/sim-vs-llama.md`.
    pub fn model_warning(&self) -> Option<String> {
        if self.served_models.is_empty() || self.served_models.contains(&self.model) {
            return None;
        }
        Some(format!(
            "warning: the server lists {} but not the model {:?}. vLLM and NIM reject such requests with HTTP 404, so set NIM_GEN_MODEL or --model to a listed model.",
            self.served_models.join(", "),
            self.model
        ))
    }

    /// Returns one line naming the target in use, for the top of a notebook or a CLI run, with
    /// a second line when the server does not list the configured model.
    pub fn describe(&self) -> String {
        let line = self.describe_target();
        match self.model_warning() {
            Some(warning) => format!("{line}\n{warning}"),
            None => line,
        }
    }

    fn describe_target(&self) -> String {
        match &self.kind {
            TargetKind::Server => format!(
                "Target: {} (model {}, endpoint {})",
                self.base_url,
                self.model,
                self.chat_url()
            ),
            TargetKind::Simulator { preset } => format!(
                "Target: the BUILT-IN SIMULATOR (preset {preset}, time scale {}) at {}; \
                 set NIM_BASE_URL to measure a real server",
                self.time_scale, self.base_url
            ),
            TargetKind::RemoteSimulator { preset } => format!(
                "Target: an infphys simulator at {} (preset {preset}, time scale {}, model {}); \
                 durations are reported in its server time",
                self.base_url, self.time_scale, self.model
            ),
        }
    }
}

/// Resolves `spec` into a target, starting the built-in simulator when the spec selects it or
/// when `NIM_BASE_URL` is unset and nothing responds at [`DEFAULT_BASE_URL`].
///
/// A server counts as responding when any HTTP response comes back from `GET {base}/v1/models`
/// within a few seconds, whatever its status.
pub async fn resolve(spec: &TargetSpec) -> Result<Target> {
    match &spec.base_url {
        BaseUrl::Url(url) => {
            let target = Target::server(url, &spec.chat_path, &spec.model, spec.api_key.clone())?;
            let probed = probe(url).await.map_err(|cause| Error::Unreachable {
                url: target.chat_url(),
                cause,
            })?;
            Ok(target.with_probe(probed))
        }
        BaseUrl::Simulator => start_simulator(spec),
        BaseUrl::Unset => match probe(DEFAULT_BASE_URL).await {
            Ok(probed) => Ok(Target::server(
                DEFAULT_BASE_URL,
                &spec.chat_path,
                &spec.model,
                spec.api_key.clone(),
            )?
            .with_probe(probed)),
            Err(cause) => {
                // The caller shows `Target::describe`, the one loud line; this is for debugging.
                tracing::debug!(url = DEFAULT_BASE_URL, %cause, "no server answered; starting the built-in simulator");
                start_simulator(spec)
            }
        },
    }
}

#[cfg(feature = "sim")]
fn start_simulator(spec: &TargetSpec) -> Result<Target> {
    Target::simulator(&spec.sim, &spec.model)
}

#[cfg(not(feature = "sim"))]
fn start_simulator(_spec: &TargetSpec) -> Result<Target> {
    Err(invalid(
        "NIM_BASE_URL",
        SIMULATOR_URL,
        "this build of infphys has no built-in simulator (the `sim` feature is off); set NIM_BASE_URL to a server",
    ))
}

/// Model list and simulator details of a responding server, read from `GET {base}/v1/models`.
#[derive(Debug, Clone, Default, PartialEq)]
struct Probed {
    /// Preset and time scale, when the server is an infphys simulator.
    simulator: Option<RemoteSimulator>,
    /// The `id` of each entry of `data`.
    models: Vec<String>,
}

/// Preset and time scale of an infphys simulator, read from its `GET {base}/v1/models`.
#[derive(Debug, Clone, PartialEq)]
struct RemoteSimulator {
    preset: String,
    time_scale: f64,
}

/// Checks that a server responds at `base_url`, and reads the models it lists and, when it is
/// an infphys simulator, its preset and time scale.
async fn probe(base_url: &str) -> Result<Probed, String> {
    let client = reqwest::Client::builder()
        .timeout(PROBE_TIMEOUT)
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .map_err(|e| e.to_string())?;
    let response = client
        .get(format!("{base_url}/v1/models"))
        .send()
        .await
        .map_err(|e| crate::client::describe_reqwest_error(&e))?;
    // Any response proves the server is up, and only a small JSON body is worth reading.
    if response
        .content_length()
        .is_some_and(|length| length > 64 * 1024)
    {
        return Ok(Probed::default());
    }
    let Ok(body) = response.json::<serde_json::Value>().await else {
        return Ok(Probed::default());
    };
    Ok(Probed {
        simulator: remote_simulator(&body),
        models: listed_models(&body),
    })
}

/// Returns the `id` of each entry of an OpenAI model list.
fn listed_models(models: &serde_json::Value) -> Vec<String> {
    models
        .get("data")
        .and_then(serde_json::Value::as_array)
        .map(|entries| {
            entries
                .iter()
                .filter_map(|entry| entry.get("id")?.as_str())
                .map(str::to_owned)
                .collect()
        })
        .unwrap_or_default()
}

fn remote_simulator(models: &serde_json::Value) -> Option<RemoteSimulator> {
    let info = models.get("infphys")?;
    let time_scale = info.get("time_scale")?.as_f64()?;
    (time_scale.is_finite() && time_scale > 0.0).then(|| RemoteSimulator {
        preset: info
            .get("preset")
            .and_then(serde_json::Value::as_str)
            .unwrap_or("unknown")
            .to_owned(),
        time_scale,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec_from(vars: &[(&str, &str)]) -> Result<TargetSpec> {
        TargetSpec::from_lookup(|name| {
            vars.iter()
                .find(|(k, _)| *k == name)
                .map(|(_, v)| v.to_string())
        })
    }

    #[test]
    fn spec_defaults_match_the_lab() {
        let spec = spec_from(&[]).unwrap();
        assert_eq!(spec.base_url, BaseUrl::Unset);
        assert_eq!(spec.chat_path, "/v1/chat/completions");
        assert_eq!(spec.model, "meta/llama-3.1-8b-instruct");
        assert_eq!(spec.api_key, None);
    }

    #[test]
    fn spec_reads_each_variable() {
        let spec = spec_from(&[
            ("NIM_BASE_URL", "http://127.0.0.1:9000/"),
            ("NIM_CHAT_PATH", "/v2/chat"),
            ("NIM_GEN_MODEL", "m"),
            ("OPENAI_API_KEY", "sk-second"),
            ("INFPHYS_TIME_SCALE", "20"),
        ])
        .unwrap();
        assert_eq!(spec.base_url, BaseUrl::Url("http://127.0.0.1:9000".into()));
        assert_eq!(spec.chat_path, "/v2/chat");
        assert_eq!(spec.model, "m");
        assert_eq!(spec.api_key, Some(ApiKey::new("sk-second")));
        assert_eq!(spec.sim.time_scale, 20.0);
    }

    #[test]
    fn nim_key_wins_over_openai_key() {
        let spec = spec_from(&[
            ("NIM_API_KEY", "nvapi-first"),
            ("OPENAI_API_KEY", "sk-second"),
        ])
        .unwrap();
        assert_eq!(spec.api_key, Some(ApiKey::new("nvapi-first")));
    }

    #[test]
    fn sim_keyword_selects_simulator() {
        assert_eq!(
            spec_from(&[("NIM_BASE_URL", "sim")]).unwrap().base_url,
            BaseUrl::Simulator
        );
    }

    #[test]
    fn malformed_base_url_names_value_and_fix() {
        let message = spec_from(&[("NIM_BASE_URL", "localhost:8000")])
            .unwrap_err()
            .to_string();
        assert!(message.contains("localhost:8000"), "{message}");
        assert!(message.contains("http://"), "{message}");
    }

    #[test]
    fn chat_path_without_slash_is_rejected() {
        let message = spec_from(&[("NIM_CHAT_PATH", "v1/chat/completions")])
            .unwrap_err()
            .to_string();
        assert!(message.contains("must start with '/'"), "{message}");
        assert!(message.contains("/v1/chat/completions"), "{message}");
    }

    #[cfg(feature = "sim")]
    #[tokio::test]
    async fn simulator_reached_by_url_keeps_its_time_scale() {
        let config = infphys_sim::SimConfig {
            time_scale: 10.0,
            ..infphys_sim::SimConfig::new(infphys_sim::Preset::Classroom)
        };
        let server = infphys_sim::spawn(config).unwrap();
        let spec = spec_from(&[("NIM_BASE_URL", server.base_url())]).unwrap();

        let target = resolve(&spec).await.unwrap();
        assert_eq!(target.time_scale(), 10.0);
        assert_eq!(
            target.kind(),
            &TargetKind::RemoteSimulator {
                preset: "classroom".into()
            }
        );
        assert!(!target.is_simulator(), "it was not started in this process");
        let described = target.describe();
        assert!(described.contains("time scale 10"), "{described}");
        assert!(described.contains("server time"), "{described}");
    }

    #[cfg(feature = "sim")]
    #[tokio::test]
    async fn unlisted_model_gets_warning() {
        let server =
            infphys_sim::spawn(infphys_sim::SimConfig::new(infphys_sim::Preset::Classroom))
                .unwrap();
        let listed = spec_from(&[("NIM_BASE_URL", server.base_url())]).unwrap();
        let unlisted = spec_from(&[
            ("NIM_BASE_URL", server.base_url()),
            ("NIM_GEN_MODEL", "foo"),
        ])
        .unwrap();

        let target = resolve(&listed).await.unwrap();
        assert_eq!(target.served_models(), std::slice::from_ref(&listed.model));
        assert_eq!(target.model_warning(), None);
        assert!(
            !target.describe().contains("warning"),
            "{}",
            target.describe()
        );

        let target = resolve(&unlisted).await.unwrap();
        let described = target.describe();
        assert!(
            described.contains("but not the model \"foo\""),
            "{described}"
        );
        assert!(described.contains(&listed.model), "{described}");
        assert!(described.contains("NIM_GEN_MODEL"), "{described}");
    }

    #[test]
    fn model_list_ids_parse() {
        let body = serde_json::json!({"data": [{"id": "a"}, {"id": "b"}, {"object": "model"}]});
        assert_eq!(listed_models(&body), ["a", "b"]);
        assert!(listed_models(&serde_json::json!({"data": "none"})).is_empty());
        assert!(listed_models(&serde_json::json!([])).is_empty());
    }

    #[test]
    fn only_an_infphys_models_body_names_a_simulator() {
        let vllm = serde_json::json!({"object": "list", "data": [{"id": "m"}]});
        assert_eq!(remote_simulator(&vllm), None);
        let zero = serde_json::json!({"infphys": {"preset": "h100", "time_scale": 0.0}});
        assert_eq!(remote_simulator(&zero), None);
        let sim = serde_json::json!({"infphys": {"preset": "h100", "time_scale": 4.0}});
        assert_eq!(
            remote_simulator(&sim),
            Some(RemoteSimulator {
                preset: "h100".into(),
                time_scale: 4.0
            })
        );
    }

    #[test]
    fn time_scale_must_be_positive() {
        for bad in ["0", "-2", "NaN", "inf", "fast"] {
            assert!(
                spec_from(&[("INFPHYS_TIME_SCALE", bad)]).is_err(),
                "{bad} was accepted"
            );
        }
    }

    #[test]
    fn key_absent_from_debug() {
        let spec = spec_from(&[("NIM_API_KEY", "nvapi-SECRET-1234")]).unwrap();
        let target = Target::server(
            "http://127.0.0.1:1",
            "/v1/chat/completions",
            "m",
            spec.api_key.clone(),
        )
        .unwrap();
        for text in [
            format!("{spec:?}"),
            format!("{target:?}"),
            format!("{spec:#?}"),
        ] {
            assert!(!text.contains("SECRET"), "key leaked: {text}");
            assert!(text.contains("redacted"), "{text}");
        }
    }
}
