//! `list-keys` in pages at a cost linear in the bucket: a listing reads the latest entry of
//! every key, in stream order, from one pull consumer kept across its pages — each page
//! fetches only the entries it returns, and the consumer waits at the cursor between pages.
//!
//! The cursor is the stream sequence of the last key returned. A page whose cursor names a
//! listing kept here continues it; any other cursor (the listing expired, or another
//! instance of the provider made it) starts a fresh consumer and skips to the cursor, which
//! is what every page cost before (O(N) each, O(N²/P) a listing): correct, just slower.
//! Either way nothing is lost or listed twice: the server delivers each key's latest entry
//! once, in sequence order, and the cursor only moves forward.
//!
//! At most [`MAX_LISTINGS`] listings are kept per bucket, each for [`LISTING_TTL`] after its
//! last page; the server drops an idle consumer a little later by itself.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use async_nats::jetstream::consumer::{self, AckPolicy, DeliverPolicy, pull};
use async_nats::jetstream::stream::Stream;
use futures::StreamExt as _;
use trellis_interfaces::keyvalue::Error;

use crate::backend::other;
use crate::keys;

/// Listings kept per bucket.
pub const MAX_LISTINGS: usize = 32;
/// How long a listing waits for its next page.
pub const LISTING_TTL: Duration = Duration::from_secs(30);

type Consumer = consumer::Consumer<pull::Config>;

/// The listings under way of one bucket, by the cursor their last page answered.
#[derive(Default)]
pub struct Listings(Mutex<HashMap<u64, (Consumer, Instant)>>);

impl Listings {
    fn take(&self, cursor: u64) -> Option<Consumer> {
        let mut kept = self.0.lock().unwrap_or_else(|e| e.into_inner());
        kept.retain(|_, (_, at)| at.elapsed() < LISTING_TTL);
        kept.remove(&cursor).map(|(c, _)| c)
    }

    fn keep(&self, cursor: u64, consumer: Consumer) {
        let mut kept = self.0.lock().unwrap_or_else(|e| e.into_inner());
        kept.retain(|_, (_, at)| at.elapsed() < LISTING_TTL);
        if kept.len() >= MAX_LISTINGS
            && let Some(oldest) = kept.iter().min_by_key(|(_, (_, at))| *at).map(|(k, _)| *k)
        {
            kept.remove(&oldest);
        }
        kept.insert(cursor, (consumer, Instant::now()));
    }

    /// One page of at most `page` keys of the KV stream `stream` (subjects `prefix` + the
    /// stored key) after `cursor`, and the cursor of the next page if there is one.
    pub async fn page(
        &self,
        stream: &Stream,
        prefix: &str,
        cursor: Option<u64>,
        page: usize,
    ) -> Result<(Vec<String>, Option<u64>), Error> {
        let page = page.max(1);
        let (consumer, skip_to) = match cursor.and_then(|c| self.take(c)) {
            Some(kept) => (kept, 0),
            None => {
                let fresh = stream
                    .create_consumer(pull::Config {
                        filter_subject: format!("{prefix}>"),
                        headers_only: true,
                        deliver_policy: DeliverPolicy::LastPerSubject,
                        ack_policy: AckPolicy::None,
                        inactive_threshold: LISTING_TTL * 2,
                        memory_storage: true,
                        ..Default::default()
                    })
                    .await
                    .map_err(|e| other("list", &e))?;
                if fresh.cached_info().num_pending == 0 {
                    return Ok((Vec::new(), None));
                }
                (fresh, cursor.unwrap_or(0))
            }
        };
        let mut keys = Vec::new();
        loop {
            // Exactly as many as the page still needs: nothing is fetched that this page
            // does not consume, so the consumer stops at the cursor.
            let mut batch = consumer
                .fetch()
                .max_messages(page - keys.len())
                .messages()
                .await
                .map_err(|e| other("list", &e))?;
            let mut got = 0;
            while let Some(message) = batch.next().await {
                let message = message.map_err(|e| Error::Other(format!("NATS list: {e}")))?;
                got += 1;
                let info = message
                    .info()
                    .map_err(|e| Error::Other(format!("NATS list: {e}")))?;
                let (seq, pending) = (info.stream_sequence, info.pending);
                let deleted = message
                    .headers
                    .as_ref()
                    .and_then(|h| h.get("KV-Operation"))
                    .is_some_and(|op| op.as_str() == "DEL" || op.as_str() == "PURGE");
                let key = message
                    .subject
                    .as_str()
                    .strip_prefix(prefix)
                    .and_then(keys::decode);
                if let (true, Some(key)) = (seq > skip_to && !deleted, key) {
                    keys.push(key);
                }
                if pending == 0 {
                    return Ok((keys, None));
                }
                if keys.len() >= page {
                    self.keep(seq, consumer);
                    return Ok((keys, Some(seq)));
                }
            }
            if got == 0 {
                return Err(Error::Other("NATS list: the listing ended early".into()));
            }
        }
    }
}
