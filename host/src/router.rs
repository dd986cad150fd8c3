//! Routing a component's imports over the lattice by link.
//!
//! Every import the host does not answer itself is polyfilled with a wRPC call; the
//! [`LinkRouter`] picks the target from the component's links (interface + link name) and
//! sends the 1.x headers (`source-id`, `link-name`). An import with no link fails the call
//! with an error naming the interface and the link name.

use std::sync::Arc;
use std::time::Duration;

use async_nats::HeaderMap;
use bytes::Bytes;
use trellis_sdk::subjects::{LINK_NAME_HEADER, LatticeSubjects, SOURCE_ID_HEADER};
use trellis_wrpc_nats::{Connection, Incoming, Outgoing};
use wrpc_transport::Invoke;

use crate::links::LinkView;

/// Why an import could not be routed.
#[derive(Debug, thiserror::Error)]
#[error("component {component} has no link named {link_name:?} for {instance}")]
pub struct NoLink {
    /// The calling component.
    pub component: String,
    /// The imported instance.
    pub instance: String,
    /// The link name looked up.
    pub link_name: String,
}

/// The [`Invoke`] behind one component's polyfilled imports.
#[derive(Clone, Debug)]
pub struct LinkRouter {
    component_id: Arc<str>,
    link_name: Arc<str>,
    links: LinkView,
    conn: Connection,
    subjects: LatticeSubjects,
    timeout: Duration,
}

impl LinkRouter {
    pub(crate) fn new(
        component_id: Arc<str>,
        links: LinkView,
        conn: Connection,
        subjects: LatticeSubjects,
        timeout: Duration,
    ) -> Self {
        Self {
            component_id,
            link_name: Arc::from(trellis_sdk::link::DEFAULT_LINK_NAME),
            links,
            conn,
            subjects,
            timeout,
        }
    }
}

impl Invoke for LinkRouter {
    type Context = ();
    type Outgoing = Outgoing;
    type Incoming = Incoming;

    async fn invoke<P>(
        &self,
        _cx: (),
        instance: &str,
        func: &str,
        params: Bytes,
        paths: impl AsRef<[P]> + Send,
    ) -> anyhow::Result<(Outgoing, Incoming)>
    where
        P: AsRef<[Option<usize>]> + Send + Sync,
    {
        let Some(target) = self
            .links
            .target(&self.component_id, instance, &self.link_name)
        else {
            return Err(NoLink {
                component: self.component_id.to_string(),
                instance: instance.to_string(),
                link_name: self.link_name.to_string(),
            }
            .into());
        };
        let mut headers = HeaderMap::new();
        headers.insert(SOURCE_ID_HEADER, &*self.component_id);
        headers.insert(LINK_NAME_HEADER, &*self.link_name);
        self.conn
            .client(self.subjects.wrpc_prefix(&target))
            .with_timeout(self.timeout)
            .invoke(Some(headers), instance, func, params, paths)
            .await
    }
}
