//! One HTTP request's trip: route it, check it, hand it to the linked component's
//! `wrpc:http/incoming-handler@0.1.0` over the lattice, and stream the answer back.
//!
//! Bodies stream both ways: the request body is forwarded as the client sends it (so a
//! 1 GiB upload never sits in memory), and the response body is pulled from the lattice as
//! the client reads it. Every failure becomes a status with a one-line reason: 404 no
//! route, 405 read-only, 413 too large, 502/503 component unreachable or broken, 504 no
//! answer in time, 500 the component failed.

use std::convert::Infallible;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock, RwLock};

use bytes::Bytes;
use futures::{Stream, StreamExt as _};
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, Request, Response, StatusCode};
use http_body::Frame;
use http_body_util::{BodyExt, StreamBody};
use hyper::body::Incoming;
use tokio::sync::{Notify, oneshot, watch};
use tracing::{Instrument as _, debug, warn};
use trellis_sdk::error::TransportError;
use trellis_sdk::link::LinkDefinition;
use trellis_sdk::runtime::{LinkedClient, ProviderHandle};
use trellis_sdk::task::AbortOnDrop;
use trellis_wrpc_nats::Pacer;

use trellis_interfaces::http::client::{self, WireRequest, WireResponse};
use trellis_interfaces::http::{self as wire};
use trellis_wrpc_nats::wire_shape::Whole;

use crate::cors;
use crate::response::{Body, BodyError, message};
use crate::routes::{RouteTable, host_name};
use crate::settings::LinkSettings;

/// The provider's handle once it exists: links arrive (and listeners bind) while the SDK is
/// still starting, before the handle that makes lattice clients is returned.
pub type Lattice = watch::Receiver<Option<ProviderHandle>>;

/// What a route leads to: a link, its settings and (made on first use) its client.
pub struct Target {
    /// The link, as put.
    pub link: Arc<LinkDefinition>,
    /// Its parsed settings.
    pub settings: LinkSettings,
    client: OnceLock<LinkedClient>,
}

impl Target {
    /// A target for `link`.
    pub fn new(link: Arc<LinkDefinition>, settings: LinkSettings) -> Self {
        Self {
            link,
            settings,
            client: OnceLock::new(),
        }
    }

    async fn client(&self, lattice: &Lattice) -> Option<LinkedClient> {
        if let Some(c) = self.client.get() {
            return Some(c.clone());
        }
        let mut lattice = lattice.clone();
        let handle = lattice.wait_for(Option::is_some).await.ok()?.clone()?;
        Some(
            self.client
                // The route's timeout also bounds every wait inside the call: a component
                // busy with a large upload, or a pause in its response body.
                .get_or_init(|| {
                    handle
                        .linked_client(&self.link)
                        .with_timeout(self.settings.timeout)
                })
                .clone(),
        )
    }
}

/// What every connection of one listener shares.
pub struct ListenerContext {
    /// The routes, swapped as links come and go.
    pub routes: RwLock<RouteTable<Target>>,
    /// The scheme the listener serves.
    pub https: bool,
    /// The provider, once started.
    pub lattice: Lattice,
}

/// Serves one request (never fails: every problem is a status).
pub async fn serve(
    cx: Arc<ListenerContext>,
    request: Request<Incoming>,
) -> Result<Response<Body>, Infallible> {
    let authority = request
        .uri()
        .authority()
        .map(|a| a.as_str().to_string())
        .or_else(|| {
            request
                .headers()
                .get(header::HOST)
                .and_then(|h| h.to_str().ok())
                .map(str::to_string)
        });
    let host = authority.as_deref().map(host_name);
    let target = {
        let routes = cx.routes.read().unwrap_or_else(|e| e.into_inner());
        routes
            .find(host.as_deref(), request.uri().path())
            .map(|r| Arc::clone(&r.target))
    };
    let Some(target) = target else {
        return Ok(message(
            StatusCode::NOT_FOUND,
            format!("no route for {}", request.uri().path()),
        ));
    };
    let span = tracing::debug_span!(
        "http.request",
        method = %request.method(),
        path = %request.uri().path(),
        component = %target.link.target,
        traceparent = request
            .headers()
            .get("traceparent")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default(),
    );
    Ok(forward(&cx, &target, authority, request)
        .instrument(span)
        .await)
}

async fn forward(
    cx: &ListenerContext,
    target: &Target,
    authority: Option<String>,
    request: Request<Incoming>,
) -> Response<Body> {
    let settings = &target.settings;
    let origin = request.headers().get(header::ORIGIN).cloned();
    if let Some(cors) = &settings.cors
        && let Some(preflight) = cors::preflight(cors, &request)
    {
        return preflight;
    }
    let mut response = call(cx, target, authority, request).await;
    if let Some(cc) = &settings.cache_control {
        response
            .headers_mut()
            .entry(header::CACHE_CONTROL)
            .or_insert_with(|| cc.clone());
    }
    if let (Some(cors), Some(origin)) = (&settings.cors, origin) {
        cors::decorate(cors, &origin, response.headers_mut());
    }
    response
}

async fn call(
    cx: &ListenerContext,
    target: &Target,
    authority: Option<String>,
    request: Request<Incoming>,
) -> Response<Body> {
    let settings = &target.settings;
    let component = &target.link.target;
    if settings.readonly && !matches!(*request.method(), Method::GET | Method::HEAD) {
        let mut r = message(
            StatusCode::METHOD_NOT_ALLOWED,
            "this route is read-only (GET and HEAD)",
        );
        r.headers_mut()
            .insert(header::ALLOW, HeaderValue::from_static("GET, HEAD"));
        return r;
    }
    if let (Some(limit), Some(len)) = (settings.max_content_len, declared_length(&request))
        && len > limit
    {
        return message(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("request body of {len} bytes is over this route's limit of {limit}"),
        );
    }
    let Some(mut client) = target.client(&cx.lattice).await else {
        return message(StatusCode::SERVICE_UNAVAILABLE, "the provider is stopping");
    };
    let trace: Vec<(&'static str, String)> = ["traceparent", "tracestate"]
        .into_iter()
        .filter_map(|n| {
            let v = request.headers().get(n)?.to_str().ok()?;
            Some((n, v.to_string()))
        })
        .collect();
    if !trace.is_empty() {
        client = client.with_headers(trace);
    }

    let upload = Arc::new(UploadWatch::default());
    // The upload is read from the client only as fast as the call sends it on.
    let pacer = Pacer::new();
    let wire = to_wire(request, authority, cx.https, settings, &upload, &pacer);
    let invocation = pacer.scope(client::handle(&client, (), wire));
    tokio::pin!(invocation);
    // The component has `timeout` to answer from when the request has arrived: the clock
    // restarts with every chunk of a (long) upload.
    let mut deadline = tokio::time::Instant::now() + settings.timeout;
    let outcome = loop {
        tokio::select! {
            outcome = &mut invocation => break Ok(outcome),
            () = tokio::time::sleep_until(deadline) => {
                let next = upload.last_progress() + settings.timeout;
                if next > tokio::time::Instant::now() {
                    deadline = next;
                    continue;
                }
                break Err(());
            }
            () = upload.wait() => return too_large(settings),
        }
    };
    match outcome {
        Err(()) => gateway_timeout(component, settings),
        Ok(Err(err)) if timed_out(&err) => gateway_timeout(component, settings),
        Ok(Err(err)) => {
            let err = format!("{err:#}");
            warn!(component, error = %err, "cannot reach the component");
            let status = if err.contains("no responders") || err.contains("did not accept") {
                StatusCode::SERVICE_UNAVAILABLE
            } else {
                StatusCode::BAD_GATEWAY
            };
            message(status, format!("component {component} cannot be reached"))
        }
        Ok(Ok((Err(code), _io))) => {
            let status = error_status(&code);
            if status.is_server_error() {
                // The detail (a trap's backtrace, say) is for the operator, not the client.
                warn!(component, error = %describe(&code), "the component failed the request");
                message(status, format!("component {component} failed"))
            } else {
                message(
                    status,
                    format!("component {component}: {}", describe(&code)),
                )
            }
        }
        Ok(Ok((Ok(response), io))) => {
            // The request body may still be flowing (a component can answer before it has
            // read it all): keep sending it while the response streams, stop when the client
            // is gone.
            let io = io.map(|io| {
                AbortOnDrop::spawn(async move {
                    if let Err(e) = io.await {
                        debug!(error = %format!("{e:#}"), "request body transfer ended early");
                    }
                })
            });
            from_wire(response, io, upload).unwrap_or_else(|why| {
                warn!(component, why, "the component's response is not valid HTTP");
                message(
                    StatusCode::BAD_GATEWAY,
                    format!("component {component} sent an invalid response: {why}"),
                )
            })
        }
    }
}

fn gateway_timeout(component: &str, settings: &LinkSettings) -> Response<Body> {
    message(
        StatusCode::GATEWAY_TIMEOUT,
        format!(
            "component {component} did not answer within {} ms",
            settings.timeout.as_millis()
        ),
    )
}

/// Whether a failed call ran out of time (the transport's waits share the route's timeout).
fn timed_out(err: &anyhow::Error) -> bool {
    err.chain().any(|e| {
        matches!(
            e.downcast_ref::<TransportError>(),
            Some(TransportError::TimedOut { .. })
        ) || e
            .downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::TimedOut)
    })
}

fn too_large(settings: &LinkSettings) -> Response<Body> {
    message(
        StatusCode::PAYLOAD_TOO_LARGE,
        format!(
            "request body is over this route's limit of {} bytes",
            settings.max_content_len.unwrap_or_default()
        ),
    )
}

fn declared_length(request: &Request<Incoming>) -> Option<u64> {
    request
        .headers()
        .get(header::CONTENT_LENGTH)?
        .to_str()
        .ok()?
        .parse()
        .ok()
}

/// The upload's progress, and whether it went over its route's limit.
struct UploadWatch {
    hit: AtomicBool,
    notify: Notify,
    last_progress: std::sync::Mutex<tokio::time::Instant>,
}

impl Default for UploadWatch {
    fn default() -> Self {
        Self {
            hit: AtomicBool::new(false),
            notify: Notify::new(),
            last_progress: std::sync::Mutex::new(tokio::time::Instant::now()),
        }
    }
}

impl UploadWatch {
    fn progressed(&self) {
        *self.last_progress.lock().unwrap_or_else(|e| e.into_inner()) = tokio::time::Instant::now();
    }

    fn last_progress(&self) -> tokio::time::Instant {
        *self.last_progress.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn raise(&self) {
        self.hit.store(true, Ordering::Release);
        self.notify.notify_waiters();
    }

    fn is_raised(&self) -> bool {
        self.hit.load(Ordering::Acquire)
    }

    async fn wait(&self) {
        let notified = self.notify.notified();
        if self.is_raised() {
            return;
        }
        notified.await;
    }
}

/// Headers that describe one hop's connection, not the message (RFC 9110 §7.6.1).
fn hop_by_hop(name: &HeaderName, connection: &[String]) -> bool {
    matches!(
        name.as_str(),
        "connection"
            | "keep-alive"
            | "proxy-connection"
            | "transfer-encoding"
            | "te"
            | "trailer"
            | "upgrade"
    ) || connection.iter().any(|c| c == name.as_str())
}

/// Header names the `Connection` header lists (lower case).
fn connection_tokens(headers: &HeaderMap) -> Vec<String> {
    headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|t| t.trim().to_ascii_lowercase())
        .filter(|t| !t.is_empty())
        .collect()
}

/// The message's headers as wire fields, without the hop-by-hop ones.
fn fields(headers: &HeaderMap) -> wire::Fields {
    let connection = connection_tokens(headers);
    wire::fields_where(headers, |name| !hop_by_hop(name, &connection))
}

type WireBody = Pin<Box<dyn Stream<Item = Bytes> + Send>>;

/// The request as the wire's, its body forwarded as the client sends it.
fn to_wire(
    request: Request<Incoming>,
    authority: Option<String>,
    https: bool,
    settings: &LinkSettings,
    upload: &Arc<UploadWatch>,
    pacer: &Pacer,
) -> WireRequest {
    let (parts, body) = request.into_parts();
    // Known to be empty (no length, or length 0, and not chunked): nothing will follow.
    let bodyless = http_body::Body::is_end_stream(&body);
    let (trailers_tx, trailers_rx) = oneshot::channel::<wire::Fields>();
    let body = Box::pin(pacer.pace(request_body(
        body,
        settings.max_content_len,
        Arc::clone(upload),
        trailers_tx,
    )));
    let request = wire::Request {
        body,
        trailers: Box::pin(async move { trailers_rx.await.ok() }),
        method: wire::method_to_wire(&parts.method),
        path_with_query: Some(
            parts
                .uri
                .path_and_query()
                .map_or_else(|| "/".to_string(), |p| p.as_str().to_string()),
        ),
        scheme: Some(if https {
            wire::Scheme::Https
        } else {
            wire::Scheme::Http
        }),
        authority,
        headers: fields(&parts.headers),
    };
    if bodyless {
        WireRequest::Bodyless(request)
    } else {
        WireRequest::Streamed(request)
    }
}

/// The client's body as a stream of chunks. Past `limit` the upload is raised and the
/// stream stalls (never a clean end: the component must not take a cut body for a whole
/// one); a client that goes away stalls it too, and the request is dropped with it.
fn request_body(
    body: Incoming,
    limit: Option<u64>,
    upload: Arc<UploadWatch>,
    trailers: oneshot::Sender<wire::Fields>,
) -> WireBody {
    let state = (body, 0u64, Some(trailers));
    Box::pin(futures::stream::unfold(
        state,
        move |(mut body, mut seen, mut trailers)| {
            let upload = Arc::clone(&upload);
            async move {
                loop {
                    match body.frame().await {
                        None => return None,
                        Some(Ok(frame)) => match frame.into_data() {
                            Ok(data) if data.is_empty() => continue,
                            Ok(data) => {
                                seen += data.len() as u64;
                                upload.progressed();
                                if limit.is_some_and(|l| seen > l) {
                                    upload.raise();
                                    futures::future::pending::<()>().await;
                                }
                                return Some((data, (body, seen, trailers)));
                            }
                            Err(frame) => {
                                if let (Ok(map), Some(tx)) =
                                    (frame.into_trailers(), trailers.take())
                                {
                                    let _ = tx.send(fields(&map));
                                }
                            }
                        },
                        Some(Err(e)) => {
                            debug!(error = %e, "client request body failed");
                            futures::future::pending::<()>().await;
                        }
                    }
                }
            }
        },
    ))
}

/// The component's response as hyper's, its body pulled from the lattice as the client
/// reads it.
fn from_wire(
    response: WireResponse,
    io: Option<AbortOnDrop>,
    upload: Arc<UploadWatch>,
) -> Result<Response<Body>, String> {
    let WireResponse {
        body,
        trailers,
        status,
        headers,
    } = response;
    let status = StatusCode::from_u16(status).map_err(|_| format!("status {status}"))?;
    let mut map = wire::to_header_map(headers).map_err(|e| e.to_string())?;
    let connection = connection_tokens(&map);
    let hop: Vec<HeaderName> = map
        .keys()
        .filter(|n| hop_by_hop(n, &connection))
        .cloned()
        .collect();
    for name in hop {
        map.remove(name);
    }

    type Frames = Pin<Box<dyn Stream<Item = Result<Frame<Bytes>, BodyError>> + Send>>;
    let data = body.map(|chunk| Ok::<_, BodyError>(Frame::data(chunk)));
    let tail = futures::stream::once(async move {
        // The io guard lives until the body has been read to its end (or dropped).
        let _io = io;
        if upload.is_raised() {
            return Some(Err::<Frame<Bytes>, BodyError>(
                "request body over the route's limit".into(),
            ));
        }
        match tokio::time::timeout(std::time::Duration::from_secs(5), trailers).await {
            Ok(Some(Whole(fields))) if !fields.is_empty() => {
                Some(Ok(Frame::trailers(wire::to_header_map_lossy(fields))))
            }
            _ => None,
        }
    })
    .filter_map(futures::future::ready);
    let frames: Frames = Box::pin(data.chain(tail));
    let mut response = Response::new(BodyExt::boxed_unsync(StreamBody::new(frames)));
    *response.status_mut() = status;
    *response.headers_mut() = map;
    Ok(response)
}

/// The status a component's `error-code` becomes.
fn error_status(code: &wire::ErrorCode) -> StatusCode {
    use wire::ErrorCode as E;
    match code {
        E::HttpRequestDenied => StatusCode::FORBIDDEN,
        E::HttpRequestLengthRequired => StatusCode::LENGTH_REQUIRED,
        E::HttpRequestBodySize(_) => StatusCode::PAYLOAD_TOO_LARGE,
        E::HttpRequestMethodInvalid | E::HttpRequestUriInvalid => StatusCode::BAD_REQUEST,
        E::HttpRequestUriTooLong => StatusCode::URI_TOO_LONG,
        E::HttpRequestHeaderSectionSize(_) | E::HttpRequestHeaderSize(_) => {
            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE
        }
        E::ConnectionTimeout | E::ConnectionReadTimeout | E::HttpResponseTimeout => {
            StatusCode::GATEWAY_TIMEOUT
        }
        E::InternalError(_) => StatusCode::INTERNAL_SERVER_ERROR,
        _ => StatusCode::BAD_GATEWAY,
    }
}

fn describe(code: &wire::ErrorCode) -> String {
    match code {
        wire::ErrorCode::InternalError(Some(why)) => format!("internal error: {why}"),
        other => format!("{other:?}"),
    }
}
