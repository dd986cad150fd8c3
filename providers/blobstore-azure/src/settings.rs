//! A link's configuration: the storage account, its key, where the service is, which Azure
//! container each container name means, and the block size of uploads. Parsed once per link
//! put; a bad value fails the link with the reason; the key never appears in `Debug` or
//! errors.

use std::collections::HashMap;

use trellis_sdk::config::{ConfigValueError, ConfigValues};
use trellis_sdk::secret::Secret;

/// Why a link's configuration is unusable.
pub type ConfigError = ConfigValueError;

/// Default size of each block of an upload.
pub const DEFAULT_BLOCK: u64 = 4 << 20;
/// Azure's largest block.
pub const MAX_BLOCK: u64 = 4000 << 20;

/// A link's settings.
#[derive(Debug, Clone)]
pub struct LinkSettings {
    /// The storage account.
    pub account: String,
    /// Its shared key (base64).
    pub access_key: Secret,
    /// The blob service's URL (the emulator's, say); `None`: Azure's public cloud.
    pub endpoint: Option<String>,
    /// Container name → Azure container (`container.<name>` keys).
    pub aliases: HashMap<String, String>,
    /// The size of each staged block of an upload.
    pub block_size: u64,
}

impl LinkSettings {
    /// Parses a link's config (keys are case-insensitive).
    pub fn parse(config: &HashMap<String, String>) -> Result<Self, ConfigError> {
        let values = ConfigValues::new(config);
        let env = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
        let account = values
            .get("account")
            .or_else(|| env("AZURE_STORAGE_ACCOUNT"))
            .ok_or_else(|| {
                ConfigValueError::new("account", "required (or AZURE_STORAGE_ACCOUNT)")
            })?;
        let access_key = values
            .get("access_key")
            .or_else(|| env("AZURE_STORAGE_KEY"))
            .ok_or_else(|| ConfigValueError::new("access_key", "required (or AZURE_STORAGE_KEY)"))?
            .into();
        let block_size = values.byte_size("block_size")?.unwrap_or(DEFAULT_BLOCK);
        if block_size == 0 || block_size > MAX_BLOCK {
            return Err(ConfigValueError::new(
                "block_size",
                "between 1 byte and 4000 MiB",
            ));
        }
        let aliases = config
            .iter()
            .filter_map(|(k, v)| {
                let name = k
                    .to_ascii_lowercase()
                    .strip_prefix("container.")?
                    .to_string();
                Some((name, v.clone()))
            })
            .collect();
        Ok(Self {
            account,
            access_key,
            endpoint: values.get("endpoint"),
            aliases,
            block_size,
        })
    }

    /// The Azure container that container `name` means.
    pub fn container<'a>(&'a self, name: &'a str) -> &'a str {
        self.aliases.get(name).map(String::as_str).unwrap_or(name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_parse_and_keep_the_key_out_of_debug() {
        let map: HashMap<String, String> = [
            ("account", "devstoreaccount1"),
            ("access_key", "a2V5LXNlY3JldA=="),
            ("endpoint", "http://127.0.0.1:10000/devstoreaccount1"),
            ("container.photos", "prod-photos"),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        let s = LinkSettings::parse(&map).expect("valid");
        assert_eq!(s.container("photos"), "prod-photos");
        assert_eq!(s.block_size, DEFAULT_BLOCK);
        assert!(!format!("{s:?}").contains("a2V5LXNlY3JldA=="));
    }
}
