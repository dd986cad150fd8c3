//! Lattice events: CloudEvents published on `wasmbus.evt.{lattice}.{type}` (*1.x* envelope).
//!
//! A provider reports what a log line alone would hide: a link it could not set up
//! (`linkdef_set_failed`), a link it purged (`link_purged`), its health changes.

use serde::{Deserialize, Serialize};

use crate::subjects::LatticeSubjects;

/// A CloudEvents 1.0 envelope, as 1.x hosts publish them.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CloudEvent {
    /// Always `1.0`.
    pub specversion: String,
    /// Unique event id.
    pub id: String,
    /// Who emitted it (provider id).
    pub source: String,
    /// `com.wasmcloud.lattice.{event}`.
    #[serde(rename = "type")]
    pub ty: String,
    /// RFC 3339 time.
    pub time: String,
    /// Always `application/json`.
    pub datacontenttype: String,
    /// The event's data.
    pub data: serde_json::Value,
}

/// Event type names (the last subject token).
pub mod kind {
    /// *1.x*: a link could not be set up.
    pub const LINK_SET_FAILED: &str = "linkdef_set_failed";
    /// Trellis: a link was purged.
    pub const LINK_PURGED: &str = "link_purged";
    /// *1.x*: a health check passed after failing.
    pub const HEALTH_PASSED: &str = "health_check_passed";
    /// *1.x*: a health check failed.
    pub const HEALTH_FAILED: &str = "health_check_failed";
}

fn rfc3339_now() -> String {
    // Civil time from the Unix clock (UTC), without pulling a date crate in for one field.
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    let secs = now.as_secs() as i64;
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // Howard Hinnant's days-to-civil algorithm.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        (rem % 3600) / 60,
        rem % 60,
        now.subsec_millis()
    )
}

impl CloudEvent {
    /// A new event of type `event` from `source`.
    pub fn new(source: &str, event: &str, data: serde_json::Value) -> Self {
        Self {
            specversion: "1.0".into(),
            id: uuid::Uuid::new_v4().to_string(),
            source: source.into(),
            ty: format!("com.wasmcloud.lattice.{event}"),
            time: rfc3339_now(),
            datacontenttype: "application/json".into(),
            data,
        }
    }
}

/// Publishes `event` with `data` on the lattice; failures are logged, never fatal (an event
/// is a report, not part of the work).
pub async fn publish(
    nats: &async_nats::Client,
    subjects: &LatticeSubjects,
    source: &str,
    event: &str,
    data: serde_json::Value,
) {
    let ev = CloudEvent::new(source, event, data);
    match serde_json::to_vec(&ev) {
        Ok(body) => {
            if let Err(err) = nats.publish(subjects.event(event), body.into()).await {
                tracing::warn!(%err, event, "failed to publish lattice event");
            }
        }
        Err(err) => tracing::warn!(%err, event, "failed to encode lattice event"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn envelope_is_cloudevents() {
        let ev = CloudEvent::new(
            "p",
            kind::LINK_SET_FAILED,
            serde_json::json!({"error": "x"}),
        );
        let v = serde_json::to_value(&ev).unwrap();
        assert_eq!(v["type"], "com.wasmcloud.lattice.linkdef_set_failed");
        assert_eq!(v["specversion"], "1.0");
        let t = v["time"].as_str().unwrap();
        assert_eq!(t.len(), 24, "{t}");
        assert!(t.starts_with("20") && t.ends_with('Z'), "{t}");
    }
}
