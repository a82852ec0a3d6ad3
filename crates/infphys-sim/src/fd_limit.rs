//! The process's open-file limit (`RLIMIT_NOFILE`), which caps the number of connections.

use std::io;

/// File descriptors kept free for things other than client connections: the listening
/// socket, the tokio driver, standard streams and files a caller opens. An estimate.
pub const FD_MARGIN: u64 = 64;

/// Soft and hard open-file limits of the process; `u64::MAX` means unlimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OpenFileLimit {
    /// Limit in force, which the process may raise up to `hard`.
    pub soft: u64,
    /// Ceiling of `soft`; only a privileged process may raise it.
    pub hard: u64,
}

/// Reads the process's open-file limit with `getrlimit(RLIMIT_NOFILE)`.
#[cfg(unix)]
pub fn open_file_limit() -> io::Result<OpenFileLimit> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `limit` is a valid, writable `rlimit` that getrlimit fills in.
    let status = unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) };
    if status != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(OpenFileLimit {
        soft: rlim_to_u64(limit.rlim_cur),
        hard: rlim_to_u64(limit.rlim_max),
    })
}

/// Reads the process's open-file limit; unsupported on this platform.
#[cfg(not(unix))]
pub fn open_file_limit() -> io::Result<OpenFileLimit> {
    Err(io::Error::new(
        io::ErrorKind::Unsupported,
        "the open-file limit is only read on Unix",
    ))
}

/// Raises the soft open-file limit to `requested`, or to the hard limit when that is lower.
/// Never lowers it. Returns the limit in force afterwards.
#[cfg(unix)]
pub fn raise_open_file_limit(requested: u64) -> io::Result<OpenFileLimit> {
    let current = open_file_limit()?;
    let target = requested.min(current.hard);
    if target <= current.soft {
        return Ok(current);
    }
    let limit = libc::rlimit {
        rlim_cur: target as libc::rlim_t,
        rlim_max: current.hard as libc::rlim_t,
    };
    // SAFETY: `limit` is a valid `rlimit` that setrlimit only reads.
    let status = unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &limit) };
    if status != 0 {
        return Err(io::Error::last_os_error());
    }
    open_file_limit()
}

/// Raises the soft open-file limit; unsupported on this platform.
#[cfg(not(unix))]
pub fn raise_open_file_limit(_requested: u64) -> io::Result<OpenFileLimit> {
    open_file_limit()
}

#[cfg(unix)]
#[allow(
    clippy::unnecessary_cast,
    reason = "rlim_t is narrower than u64 on some 32-bit targets"
)]
fn rlim_to_u64(value: libc::rlim_t) -> u64 {
    if value == libc::RLIM_INFINITY {
        u64::MAX
    } else {
        value as u64
    }
}

/// Returns a warning when `limit` leaves fewer than `max_connections` descriptors for
/// connections after [`FD_MARGIN`], or `None` when it is high enough.
pub fn fd_limit_warning(limit: OpenFileLimit, max_connections: usize) -> Option<String> {
    let needed = max_connections as u64 + FD_MARGIN;
    if limit.soft >= needed {
        return None;
    }
    let usable = limit.soft.saturating_sub(FD_MARGIN);
    Some(format!(
        "the open-file limit (RLIMIT_NOFILE) is {soft} (hard limit {hard}), so the simulator \
         can hold only about {usable} connections, fewer than max_connections {max_connections}; \
         past it, new connections wait unaccepted. Raise the limit with `ulimit -n 65536` in the \
         shell that starts the simulator (past the hard limit this needs root), or lower \
         --max-connections",
        soft = limit.soft,
        hard = display_limit(limit.hard),
    ))
}

fn display_limit(value: u64) -> String {
    if value == u64::MAX {
        "unlimited".to_string()
    } else {
        value.to_string()
    }
}

/// Logs a warning when the open-file limit is below what `max_connections` needs.
pub(crate) fn warn_if_fd_limit_low(max_connections: usize) {
    match open_file_limit() {
        Ok(limit) => {
            if let Some(warning) = fd_limit_warning(limit, max_connections) {
                tracing::warn!("{warning}");
            }
        }
        Err(error) => {
            tracing::debug!(%error, "failed to read the open-file limit");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn low_fd_limit_warns_with_fix() {
        let limit = OpenFileLimit {
            soft: 1024,
            hard: 4096,
        };
        let warning = fd_limit_warning(limit, 16_384).unwrap();
        assert!(warning.contains("is 1024 (hard limit 4096)"), "{warning}");
        assert!(warning.contains("about 960 connections"), "{warning}");
        assert!(warning.contains("max_connections 16384"), "{warning}");
        assert!(warning.contains("ulimit -n 65536"), "{warning}");
    }

    #[test]
    fn high_fd_limit_does_not_warn() {
        let limit = OpenFileLimit {
            soft: 16_384 + FD_MARGIN,
            hard: u64::MAX,
        };
        assert_eq!(fd_limit_warning(limit, 16_384), None);
        let below = OpenFileLimit {
            soft: 16_384 + FD_MARGIN - 1,
            hard: u64::MAX,
        };
        let warning = fd_limit_warning(below, 16_384).unwrap();
        assert!(warning.contains("hard limit unlimited"), "{warning}");
    }

    #[cfg(unix)]
    #[test]
    fn open_file_limit_reads_and_keeps_soft_limit() {
        let limit = open_file_limit().unwrap();
        assert!(limit.soft <= limit.hard, "{limit:?}");
        let unchanged = raise_open_file_limit(limit.soft).unwrap();
        assert_eq!(
            unchanged, limit,
            "asking for the current soft limit changes nothing"
        );
    }
}
