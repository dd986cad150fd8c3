//! A link's configuration: where the S3 service is, with which credentials, which bucket each
//! container name means, and how uploads are cut into parts. Parsed once per link put; a bad
//! value fails the link with the reason; secrets never appear in `Debug` or errors.

use std::collections::HashMap;

use trellis_sdk::config::{ConfigValueError, ConfigValues};
use trellis_sdk::secret::Secret;

/// Why a link's configuration is unusable.
pub type ConfigError = ConfigValueError;

/// S3's smallest part (all but the last part of a multipart upload).
pub const MIN_PART: u64 = 5 << 20;
/// Default part size, and the size above which an upload goes multipart.
pub const DEFAULT_PART: u64 = 8 << 20;
/// S3's largest object one `CopyObject` copies (and its largest part): larger ones are copied
/// part by part.
pub const MAX_SINGLE_COPY: u64 = 5 << 30;
/// Default size of each part of a multipart copy.
pub const DEFAULT_COPY_PART: u64 = 512 << 20;

/// A link's settings.
#[derive(Debug, Clone)]
pub struct LinkSettings {
    /// The service's URL (an S3-compatible store); `None`: AWS for the region.
    pub endpoint: Option<String>,
    /// The region.
    pub region: String,
    /// Path-style addressing (`endpoint/bucket/key`), as S3-compatible stores want.
    pub path_style: bool,
    /// The access key id.
    pub access_key_id: String,
    /// The secret access key.
    pub secret_access_key: Secret,
    /// A session token, for temporary credentials.
    pub session_token: Option<Secret>,
    /// Container name → bucket (`container.<name>` keys); names not listed are buckets of
    /// the same name.
    pub aliases: HashMap<String, String>,
    /// Uploads larger than this go multipart.
    pub multipart_threshold: u64,
    /// The size of each part.
    pub part_size: u64,
    /// Objects larger than this are copied part by part (`UploadPartCopy`).
    pub copy_threshold: u64,
    /// The size of each part of such a copy.
    pub copy_part_size: u64,
}

impl LinkSettings {
    /// Parses a link's config (keys are case-insensitive).
    pub fn parse(config: &HashMap<String, String>) -> Result<Self, ConfigError> {
        let values = ConfigValues::new(config);
        let env = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
        let access_key_id = values
            .get("access_key_id")
            .or_else(|| env("AWS_ACCESS_KEY_ID"))
            .ok_or_else(|| {
                ConfigValueError::new("access_key_id", "required (or AWS_ACCESS_KEY_ID)")
            })?;
        let secret_access_key = values
            .get("secret_access_key")
            .or_else(|| env("AWS_SECRET_ACCESS_KEY"))
            .ok_or_else(|| {
                ConfigValueError::new("secret_access_key", "required (or AWS_SECRET_ACCESS_KEY)")
            })?
            .into();
        let part_size = values.byte_size("part_size")?.unwrap_or(DEFAULT_PART);
        if part_size < MIN_PART {
            return Err(ConfigValueError::new(
                "part_size",
                "at least 5 MiB (S3's smallest part)",
            ));
        }
        let multipart_threshold = values
            .byte_size("multipart_threshold")?
            .unwrap_or(part_size);
        let copy_threshold = values
            .byte_size("copy_threshold")?
            .unwrap_or(MAX_SINGLE_COPY);
        let copy_part_size = values
            .byte_size("copy_part_size")?
            .unwrap_or(DEFAULT_COPY_PART);
        if !(MIN_PART..=MAX_SINGLE_COPY).contains(&copy_threshold) {
            return Err(ConfigValueError::new(
                "copy_threshold",
                "between 5 MiB and 5 GiB (S3's single-copy limit)",
            ));
        }
        if !(MIN_PART..=MAX_SINGLE_COPY).contains(&copy_part_size) {
            return Err(ConfigValueError::new(
                "copy_part_size",
                "between 5 MiB and 5 GiB (S3's part limits)",
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
            endpoint: values.get("endpoint"),
            region: values
                .get("region")
                .or_else(|| env("AWS_REGION"))
                .unwrap_or_else(|| "us-east-1".into()),
            path_style: values.flag("force_path_style")?,
            access_key_id,
            secret_access_key,
            session_token: values.get("session_token").map(Secret::from),
            aliases,
            multipart_threshold,
            part_size,
            copy_threshold,
            copy_part_size,
        })
    }

    /// The bucket container `name` means.
    pub fn bucket<'a>(&'a self, name: &'a str) -> &'a str {
        self.aliases.get(name).map(String::as_str).unwrap_or(name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(pairs: &[(&str, &str)]) -> Result<LinkSettings, ConfigError> {
        let map = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        LinkSettings::parse(&map)
    }

    #[test]
    fn settings_parse_with_aliases_and_keep_the_secret_out_of_debug() {
        let s = parse(&[
            ("endpoint", "http://127.0.0.1:9000"),
            ("access_key_id", "AKID"),
            ("secret_access_key", "very-secret"),
            ("force_path_style", "true"),
            ("container.photos", "acme-photos-prod"),
            ("part_size", "16MiB"),
        ])
        .expect("valid");
        assert_eq!(s.bucket("photos"), "acme-photos-prod");
        assert_eq!(s.bucket("other"), "other");
        assert!(s.path_style);
        assert_eq!(s.region, "us-east-1");
        assert_eq!(s.part_size, 16 << 20);
        assert_eq!(s.multipart_threshold, 16 << 20);
        assert_eq!(s.copy_threshold, 5 << 30);
        assert_eq!(s.copy_part_size, 512 << 20);
        assert!(!format!("{s:?}").contains("very-secret"));
        let err = parse(&[
            ("access_key_id", "a"),
            ("secret_access_key", "b"),
            ("part_size", "1MiB"),
        ])
        .unwrap_err()
        .to_string();
        assert!(err.contains("part_size"), "{err}");
        let err = parse(&[
            ("access_key_id", "a"),
            ("secret_access_key", "b"),
            ("copy_threshold", "6GiB"),
        ])
        .unwrap_err()
        .to_string();
        assert!(err.contains("copy_threshold"), "{err}");
    }
}
