//! Error types of the native core. Every fallible operation returns one of these; none panics on bad
//! input (the Python bindings additionally convert any panic into an error, see `lib.rs`).

use std::fmt;

/// A data file or folder is missing, malformed or unsuitable. `path` names it; `msg` the problem.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DataError {
    pub path: String,
    pub msg: String,
}

impl DataError {
    pub fn new(path: impl AsRef<str>, msg: impl Into<String>) -> Self {
        DataError {
            path: path.as_ref().to_string(),
            msg: msg.into(),
        }
    }

    /// An I/O error while opening or reading `path`, with the common cases worded plainly.
    pub fn io(path: impl AsRef<str>, err: &std::io::Error) -> Self {
        let msg = match err.kind() {
            std::io::ErrorKind::NotFound => "no such file".to_string(),
            std::io::ErrorKind::PermissionDenied => "permission denied".to_string(),
            _ => format!("cannot read ({err})"),
        };
        DataError::new(path, msg)
    }
}

impl fmt::Display for DataError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.path, self.msg)
    }
}

impl std::error::Error for DataError {}

/// Why an episode cannot be drawn. The messages are those of the Python reference sampler.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SampleError {
    /// The class pool holds fewer classes than an episode needs (the reference raises `ValueError`).
    PoolTooSmall { have: usize, ways: usize },
    /// A chosen class holds too few images (the reference raises `TooFewImagesError`).
    TooFewImages {
        class: i64,
        have: usize,
        role: &'static str,
        needed: usize,
    },
    /// An invalid argument (episode spec, index array); raised as `ValueError`.
    Invalid(String),
}

impl fmt::Display for SampleError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SampleError::PoolTooSmall { have, ways } => {
                write!(f, "the class pool holds {have} classes, an episode needs {ways}")
            }
            SampleError::TooFewImages {
                class,
                have,
                role,
                needed,
            } => write!(
                f,
                "class {class} has {have} images for the {role}, the episode needs {needed}"
            ),
            SampleError::Invalid(msg) => f.write_str(msg),
        }
    }
}

impl std::error::Error for SampleError {}
