//! Blobstore benchmark: upload and download throughput of one object through each provider
//! (blobstore-fs, blobstore-s3 against the S3-compatible server, blobstore-azure against the
//! emulator), called over the lattice as a linked component calls it, against the backend's
//! own client doing the same transfer on the same server — `cp` for the file system, the AWS
//! SDK for S3, the Azure SDK for Azure — and the provider's peak resident memory.
//!
//! Rounds are **interleaved**: each round moves the object directly, then through the
//! provider, for every backend; a ratio is taken within its round and the median of the
//! rounds' ratios is reported. On a shared two-core machine throughput swings within a
//! minute; ratios of rows measured side by side swing far less.
//!
//! The target (issue: blobstore) is ≥ 0.7× direct throughput at a peak RSS ≤ 64 MiB. Each
//! round also measures the lattice's own ceiling — the same bytes as plain NATS pub/sub
//! between two connections — which bounds every provider row: a provider transfer crosses
//! nats-server too.
//!
//! Run with `scripts/bench.sh` (release build; starts nats, s3 and azure).
//! `BENCH_SCALE` scales the object (256 MiB at 1.0, at least 16 MiB); `BENCH_ROUNDS` sets the
//! rounds (5); `BENCH_ONLY=fs,s3` measures only those backends.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use bytes::Bytes;
use futures::StreamExt as _;
use trellis_conformance::lattice::ProviderProcess;
use trellis_interfaces::blobstore::{ByteStream, Client, ObjectId};
use trellis_sdk::runtime::LinkedClient;
use trellis_tests as common;

/// Pieces the provider's upload stream is cut into (what a component's writes look like).
const PIECE: usize = 256 << 10;

fn object_size() -> usize {
    let scale: f64 = std::env::var("BENCH_SCALE")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1.0);
    (((256 << 20) as f64 * scale) as usize).max(16 << 20) / PIECE * PIECE
}

fn rounds() -> usize {
    std::env::var("BENCH_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .filter(|n| *n > 0)
        .unwrap_or(5)
}

/// The backend's own client, doing a transfer without the provider.
enum Direct {
    /// `cp` into and out of the provider's root.
    Fs { root: PathBuf },
    /// The AWS SDK, on the same bucket.
    S3 {
        client: aws_sdk_s3::Client,
        bucket: String,
    },
    /// The Azure SDK, on the same container.
    Azure {
        container: azure_storage_blobs::prelude::ContainerClient,
    },
}

/// One backend: its provider, linked, and its direct client.
struct Backend {
    name: &'static str,
    provider: ProviderProcess,
    client: LinkedClient,
    container: String,
    direct: Direct,
}

/// Throughputs (MB/s) of one round for one backend.
#[derive(Default, Clone, Copy)]
struct Round {
    direct_up: f64,
    provider_up: f64,
    direct_down: f64,
    provider_down: f64,
}

fn mbps(bytes: usize, took: Duration) -> f64 {
    bytes as f64 / 1e6 / took.as_secs_f64()
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

impl Backend {
    async fn link(
        name: &'static str,
        bin: &str,
        config: HashMap<String, String>,
        container: String,
        direct: Direct,
    ) -> anyhow::Result<Self> {
        let id = format!("bench-{bin}");
        let provider = ProviderProcess::start_with(bin, &id, &["--rpc-timeout-ms", "120000"]).await;
        let client = provider
            .link("bench", "wasi", "blobstore", &["blobstore"], config)
            .await;
        let bs = Client::new(&client, ());
        common::eventually(|| async {
            Ok::<_, anyhow::Error>(
                bs.container_exists("probe")
                    .await
                    .map_err(|e| format!("{e:?}")),
            )
        })
        .await?
        .map_err(anyhow::Error::msg)
        .with_context(|| format!("{name}: the link is not served"))?;
        bs.create_container(&container)
            .await
            .map_err(|e| anyhow::anyhow!("{name}: create container: {e:?}"))?;
        Ok(Self {
            name,
            provider,
            client,
            container,
            direct,
        })
    }

    async fn provider_upload(&self, data: &Bytes) -> anyhow::Result<Duration> {
        let bs = Client::new(&self.client, ());
        let id = ObjectId::new(&self.container, "via-provider");
        let pieces: Vec<Bytes> = (0..data.len())
            .step_by(PIECE)
            .map(|i| data.slice(i..i + PIECE))
            .collect();
        let stream: ByteStream = Box::pin(futures::stream::iter(pieces));
        let started = Instant::now();
        bs.write_container_data(&id, stream)
            .await
            .map_err(|e| anyhow::anyhow!("{}: upload: {e:?}", self.name))?;
        Ok(started.elapsed())
    }

    async fn provider_download(&self, size: usize) -> anyhow::Result<Duration> {
        let bs = Client::new(&self.client, ());
        let id = ObjectId::new(&self.container, "via-provider");
        let started = Instant::now();
        let (data, done) = bs
            .get_container_data(&id, 0, u64::MAX)
            .await
            .map_err(|e| anyhow::anyhow!("{}: download: {e:?}", self.name))?;
        let got = data.fold(0usize, |n, b| async move { n + b.len() }).await;
        done.await
            .map_err(|e| anyhow::anyhow!("{}: download: {e:?}", self.name))?;
        if got != size {
            bail!("{}: downloaded {got} of {size} bytes", self.name);
        }
        Ok(started.elapsed())
    }

    /// The direct upload of `file` (holding `data`).
    async fn direct_upload(&self, file: &Path, data: &Bytes) -> anyhow::Result<Duration> {
        let started = Instant::now();
        match &self.direct {
            Direct::Fs { root } => {
                let dest = root.join(&self.container).join("direct");
                cp(file, &dest)?;
            }
            Direct::S3 { client, bucket } => {
                let body = aws_sdk_s3::primitives::ByteStream::from_path(file).await?;
                client
                    .put_object()
                    .bucket(bucket)
                    .key("direct")
                    .body(body)
                    .send()
                    .await
                    .context("S3 put")?;
            }
            Direct::Azure { container } => {
                container
                    .blob_client("direct")
                    .put_block_blob(data.clone())
                    .await
                    .context("Azure put")?;
            }
        }
        Ok(started.elapsed())
    }

    async fn direct_download(&self, size: usize) -> anyhow::Result<Duration> {
        let started = Instant::now();
        let got = match &self.direct {
            Direct::Fs { root } => {
                let src = root.join(&self.container).join("direct");
                cp(&src, Path::new("/dev/null"))?;
                size
            }
            Direct::S3 { client, bucket } => {
                let mut body = client
                    .get_object()
                    .bucket(bucket)
                    .key("direct")
                    .send()
                    .await
                    .context("S3 get")?
                    .body;
                let mut got = 0;
                while let Some(piece) = body.next().await {
                    got += piece?.len();
                }
                got
            }
            Direct::Azure { container } => {
                let mut pages = container.blob_client("direct").get().into_stream();
                let mut got = 0;
                while let Some(page) = pages.next().await {
                    let mut data = page.context("Azure get")?.data;
                    while let Some(piece) = data.next().await {
                        got += piece?.len();
                    }
                }
                got
            }
        };
        if got != size {
            bail!("{}: direct download got {got} of {size} bytes", self.name);
        }
        Ok(started.elapsed())
    }

    async fn round(&self, file: &Path, data: &Bytes) -> anyhow::Result<Round> {
        let size = data.len();
        Ok(Round {
            direct_up: mbps(size, self.direct_upload(file, data).await?),
            provider_up: mbps(size, self.provider_upload(data).await?),
            direct_down: mbps(size, self.direct_download(size).await?),
            provider_down: mbps(size, self.provider_download(size).await?),
        })
    }
}

fn cp(from: &Path, to: &Path) -> anyhow::Result<()> {
    let status = std::process::Command::new("cp")
        .arg(from)
        .arg(to)
        .status()
        .context("cp")?;
    if !status.success() {
        bail!("cp {} {}: {status}", from.display(), to.display());
    }
    Ok(())
}

/// The ceiling of any path over the lattice: the object's bytes published as 64 KiB
/// messages from one NATS connection to a subscriber on another (every provider transfer
/// crosses nats-server once each way as well), MB/s.
async fn nats_ceiling(data: &Bytes) -> anyhow::Result<f64> {
    let (publisher, subscriber) = (common::nats().await, common::nats().await);
    let subject = format!("bench.ceiling.{}", &common::unique_lattice("")[1..9]);
    let mut sub = subscriber.subscribe(subject.clone()).await?;
    subscriber.flush().await?;
    let size = data.len();
    // The publisher stays within a window of what the subscriber has read: nats-server drops
    // messages for a subscriber more than its pending limit behind.
    const WINDOW: usize = 16 << 20;
    let read = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counted = Arc::clone(&read);
    let reader = tokio::spawn(async move {
        while counted.load(std::sync::atomic::Ordering::Acquire) < size {
            match sub.next().await {
                Some(msg) => {
                    counted.fetch_add(msg.payload.len(), std::sync::atomic::Ordering::AcqRel);
                }
                None => break,
            }
        }
    });
    let started = Instant::now();
    for i in (0..size).step_by(64 << 10) {
        while i > read.load(std::sync::atomic::Ordering::Acquire) + WINDOW {
            publisher.flush().await?;
            tokio::task::yield_now().await;
        }
        publisher
            .publish(subject.clone(), data.slice(i..(i + (64 << 10)).min(size)))
            .await?;
    }
    publisher.flush().await?;
    tokio::time::timeout(Duration::from_secs(60), reader)
        .await
        .context("the ceiling's subscriber lost messages")??;
    let got = read.load(std::sync::atomic::Ordering::Acquire);
    if got != size {
        bail!("the ceiling's subscriber got {got} of {size} bytes");
    }
    Ok(mbps(size, started.elapsed()))
}

fn config(pairs: &[(&str, String)]) -> HashMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.clone()))
        .collect()
}

async fn backends(suffix: &str) -> anyhow::Result<Vec<Backend>> {
    let root = std::env::temp_dir().join(format!("trellis-bench-blobs-{suffix}"));
    std::fs::create_dir_all(&root)?;
    let fs = Backend::link(
        "fs",
        "blobstore-fs",
        config(&[("root", root.display().to_string())]),
        "bench".into(),
        Direct::Fs { root },
    )
    .await?;

    let bucket = format!("bench-{suffix}");
    let s3 = aws_sdk_s3::Client::from_conf(
        aws_sdk_s3::Config::builder()
            .behavior_version(aws_sdk_s3::config::BehaviorVersion::latest())
            .region(aws_sdk_s3::config::Region::new("us-east-1"))
            .endpoint_url(common::s3_url())
            .force_path_style(true)
            .credentials_provider(aws_sdk_s3::config::Credentials::new(
                "test", "test", None, None, "bench",
            ))
            .http_client(
                aws_smithy_http_client::Builder::new()
                    .tls_provider(aws_smithy_http_client::tls::Provider::Rustls(
                        aws_smithy_http_client::tls::rustls_provider::CryptoMode::Ring,
                    ))
                    .build_https(),
            )
            .build(),
    );
    let s3 = Backend::link(
        "s3",
        "blobstore-s3",
        config(&[
            ("endpoint", common::s3_url()),
            ("access_key_id", "test".into()),
            ("secret_access_key", "test".into()),
            ("force_path_style", "true".into()),
        ]),
        bucket.clone(),
        Direct::S3 { client: s3, bucket },
    )
    .await?;

    let azure_container = format!("bench-{suffix}");
    let credentials = azure_storage::StorageCredentials::access_key(
        "devstoreaccount1",
        common::AZURITE_KEY.to_string(),
    );
    let service = azure_storage_blobs::prelude::ClientBuilder::with_location(
        azure_storage::CloudLocation::Custom {
            account: "devstoreaccount1".into(),
            uri: common::azure_url(),
        },
        credentials,
    )
    .blob_service_client();
    let azure = Backend::link(
        "azure",
        "blobstore-azure",
        config(&[
            ("endpoint", common::azure_url()),
            ("account", "devstoreaccount1".into()),
            ("access_key", common::AZURITE_KEY.into()),
        ]),
        azure_container.clone(),
        Direct::Azure {
            container: service.container_client(azure_container),
        },
    )
    .await?;
    let only = std::env::var("BENCH_ONLY").unwrap_or_default();
    Ok([fs, s3, azure]
        .into_iter()
        .filter(|b| only.is_empty() || only.split(',').any(|o| o == b.name))
        .collect())
}

fn print_summary(backends: &[Backend], results: &[Vec<Round>], ceiling: &[f64], size: usize) {
    println!(
        "\nblobstore: one {} MiB object, median of {} interleaved rounds (MB/s; ratio = provider / direct, median of same-round ratios)",
        size >> 20,
        results.first().map_or(0, Vec::len)
    );
    println!(
        "{:<6} {:>10} {:>10} {:>7}   {:>10} {:>10} {:>7}   {:>12}",
        "", "up direct", "up via", "ratio", "down direct", "down via", "ratio", "provider RSS"
    );
    for (backend, rounds) in backends.iter().zip(results) {
        let col = |f: fn(&Round) -> f64| median(rounds.iter().map(f).collect());
        let (_, peak) = common::memory_kib(backend.provider.pid());
        println!(
            "{:<6} {:>10.0} {:>10.0} {:>6.2}×   {:>10.0} {:>10.0} {:>6.2}×   {:>8} MiB peak",
            backend.name,
            col(|r| r.direct_up),
            col(|r| r.provider_up),
            col(|r| r.provider_up / r.direct_up),
            col(|r| r.direct_down),
            col(|r| r.provider_down),
            col(|r| r.provider_down / r.direct_down),
            peak >> 10,
        );
    }
    if !ceiling.is_empty() {
        println!(
            "raw NATS pub/sub of the same bytes (the ceiling of any path over the lattice): {:.0} MB/s",
            median(ceiling.to_vec())
        );
    }
}

async fn bench() -> anyhow::Result<()> {
    let size = object_size();
    let suffix = &common::unique_lattice("")[1..9];
    let data = Bytes::from((0..size).map(|i| (i % 251) as u8).collect::<Vec<u8>>());
    let file = std::env::temp_dir().join(format!("trellis-bench-object-{suffix}"));
    std::fs::write(&file, &data)?;
    let backends = backends(suffix).await?;
    let mut results = vec![Vec::new(); backends.len()];
    let mut ceiling = Vec::new();
    for round in 0..rounds() {
        // The ceiling is a reference, not the subject: a run where nats-server dropped some of
        // its burst reports no ceiling for that round rather than no figures at all.
        match nats_ceiling(&data).await {
            Ok(mbps) => ceiling.push(mbps),
            Err(err) => eprintln!("round {round}: no NATS ceiling ({err:#})"),
        }
        for (backend, results) in backends.iter().zip(&mut results) {
            let r = backend.round(&file, &data).await?;
            eprintln!(
                "round {round} {:<5}: up {:.0} vs {:.0} MB/s, down {:.0} vs {:.0} MB/s (direct vs via provider)",
                backend.name, r.direct_up, r.provider_up, r.direct_down, r.provider_down
            );
            results.push(r);
        }
    }
    print_summary(&backends, &results, &ceiling, size);
    for backend in &backends {
        let bs = Client::new(&backend.client, ());
        let _ = bs.clear_container(&backend.container).await;
        let _ = bs.delete_container(&backend.container).await;
        if let Direct::Fs { root } = &backend.direct {
            let _ = std::fs::remove_dir_all(root);
        }
    }
    let _ = std::fs::remove_file(&file);
    Ok(())
}

fn main() -> anyhow::Result<()> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?
        .block_on(bench())
}
