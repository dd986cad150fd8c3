//! The outgoing handler on the pooled client: each call resolves its link's settings
//! (`self.link(&cx)?`), is checked against the link's allowed hosts, and is sent with the
//! caller's timeouts capped by the link's; failures become the interface's error codes.

use std::sync::Arc;

use http_body_util::BodyExt as _;
use trellis_interfaces::http::server::{OutgoingHandler, RequestOptions};
use trellis_interfaces::http::{Body, ErrorCode};
use trellis_sdk::link::{LinkDefinition, LinkStates};
use trellis_sdk::provider::{LinkConfig, Provider};
use trellis_sdk::runtime::CallContext;

use crate::backend::{Backend, BackendError, BetweenBytes, BodyError, error_code};
use crate::settings::LinkSettings;

/// The provider: per-link settings, one shared backend.
#[derive(Clone)]
pub struct HttpClient {
    links: LinkStates<LinkSettings>,
    backend: Backend,
}

impl HttpClient {
    /// A provider trusting the system's root certificates.
    pub fn new() -> Result<Self, BackendError> {
        Ok(Self {
            links: LinkStates::default(),
            backend: Backend::new()?,
        })
    }

    /// The settings of the call's link.
    fn link(&self, cx: &CallContext) -> Result<Arc<LinkSettings>, ErrorCode> {
        self.links.get(&cx.link).ok_or_else(|| {
            ErrorCode::InternalError(Some("this link has no http-client settings (yet)".into()))
        })
    }
}

impl Provider for HttpClient {
    async fn receive_link_config_as_target(&self, link: LinkConfig<'_>) -> anyhow::Result<()> {
        let settings = LinkSettings::parse(link.config)?;
        self.links.insert(link.link, settings);
        Ok(())
    }

    async fn delete_link_as_target(&self, link: &LinkDefinition) -> anyhow::Result<()> {
        self.links.remove(link);
        Ok(())
    }
}

impl OutgoingHandler<CallContext> for HttpClient {
    async fn handle(
        &self,
        cx: CallContext,
        request: http::Request<Body>,
        options: RequestOptions,
    ) -> Result<http::Response<Body>, ErrorCode> {
        let settings = self.link(&cx)?;
        let uri = request.uri();
        let (Some(host), Some(scheme)) = (uri.host(), uri.scheme()) else {
            return Err(ErrorCode::HttpRequestUriInvalid);
        };
        let port = uri
            .port_u16()
            .unwrap_or(if *scheme == http::uri::Scheme::HTTPS {
                443
            } else {
                80
            });
        if !settings.allows(host, port) {
            tracing::debug!(
                source = cx.source_id,
                host,
                port,
                "host not allowed by the link"
            );
            return Err(ErrorCode::HttpRequestDenied);
        }
        let timeouts = settings.timeouts(options);
        let client = self.backend.client(timeouts.connect);
        let request = request.map(|body| {
            body.map_err(|code| BodyError(format!("{code:?}")))
                .boxed_unsync()
        });
        let response = tokio::time::timeout(timeouts.first_byte, client.request(request))
            .await
            .map_err(|_| ErrorCode::HttpResponseTimeout)?
            .map_err(|e| error_code(&e))?;
        Ok(response.map(|body| BetweenBytes::new(body, timeouts.between_bytes).boxed_unsync()))
    }
}
