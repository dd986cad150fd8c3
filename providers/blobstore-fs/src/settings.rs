//! A link's configuration: the directory its containers live in. Parsed once per link put; a
//! bad value fails the link with the reason.

use std::collections::HashMap;
use std::path::PathBuf;

use trellis_sdk::config::{ConfigValueError, ConfigValues};

/// Why a link's configuration is unusable.
pub type ConfigError = ConfigValueError;

/// A link's settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinkSettings {
    /// The root directory (an absolute path); `None`: the provider's default.
    pub root: Option<PathBuf>,
}

impl LinkSettings {
    /// Parses a link's config (keys are case-insensitive: 1.x links say `ROOT`).
    pub fn parse(config: &HashMap<String, String>) -> Result<Self, ConfigError> {
        let values = ConfigValues::new(config);
        let root = values.get("root").map(PathBuf::from);
        if let Some(root) = &root
            && !root.is_absolute()
        {
            return Err(ConfigValueError::new("root", "must be an absolute path"));
        }
        Ok(Self { root })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_root_is_absolute_or_absent() {
        let parse = |pairs: &[(&str, &str)]| {
            let map = pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect();
            LinkSettings::parse(&map)
        };
        assert_eq!(
            parse(&[("ROOT", "/srv/blobs")]).unwrap().root,
            Some("/srv/blobs".into())
        );
        assert_eq!(parse(&[]).unwrap().root, None);
        let err = parse(&[("root", "relative/dir")]).unwrap_err().to_string();
        assert!(err.contains("root") && err.contains("absolute"), "{err}");
    }
}
