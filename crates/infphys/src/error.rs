//! The library's error type.

/// Errors from configuring a target, validating input, or building results.
///
/// Failed requests are not errors: a request that times out or gets a 500 becomes a row with an
/// error kind (see [`crate::ErrorKind`]). These variants are for things that stop a run from
/// starting or its results from being built.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// An environment variable or argument contains a value that cannot be used.
    #[error("invalid {name} {value:?}: {reason}")]
    InvalidConfig {
        /// The variable or argument, for example `NIM_BASE_URL`.
        name: &'static str,
        /// The value given.
        value: String,
        /// The reason it is invalid and how to fix it.
        reason: String,
    },

    /// An explicitly configured server did not respond.
    #[error(
        "no server answered at {url}: {cause}\n\
         Start the server (or check that NIM_BASE_URL and NIM_CHAT_PATH are right), \
         or set NIM_BASE_URL=sim to use the built-in simulator."
    )]
    Unreachable {
        /// The URL that was tried.
        url: String,
        /// The cause of the failure.
        cause: String,
    },

    /// The preflight request failed.
    #[error(
        "preflight failed at {url}: {cause}\n\
         Start an OpenAI-compatible server there (for a real one on this machine's CPU: \
         scripts/real-server.sh), fix NIM_BASE_URL / NIM_CHAT_PATH / NIM_GEN_MODEL, \
         or set NIM_BASE_URL=sim to use the built-in simulator; then run the preflight again."
    )]
    Preflight {
        /// The URL that was tried.
        url: String,
        /// The request's error.
        cause: String,
    },

    /// The built-in simulator could not start.
    #[cfg(feature = "sim")]
    #[error("the built-in simulator failed to start: {0}")]
    Simulator(#[from] infphys_sim::SimError),

    /// The HTTP client could not be built.
    #[error("failed to build the HTTP client: {0}")]
    Client(#[source] reqwest::Error),

    /// A DataFrame could not be built or read.
    #[error(transparent)]
    Polars(#[from] polars::error::PolarsError),

    /// A file could not be written or read.
    #[error("{action} {path}: {source}")]
    Io {
        /// The action that failed, for example "failed to write".
        action: &'static str,
        /// The file or folder.
        path: String,
        /// The underlying error.
        source: std::io::Error,
    },
}

/// Shorthand for results whose error is [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

pub(crate) fn invalid(
    name: &'static str,
    value: impl ToString,
    reason: impl Into<String>,
) -> Error {
    Error::InvalidConfig {
        name,
        value: value.to_string(),
        reason: reason.into(),
    }
}
