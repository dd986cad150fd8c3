//! What one component instance's store holds: WASI (no files, no network, output to the
//! host log), the local imports, the memory limiter, and the link router its polyfilled
//! imports call through.

use std::time::Duration;

use wasmtime::component::ResourceTable;
use wasmtime::{StoreLimits, StoreLimitsBuilder};
use wasmtime_wasi::p2::pipe::MemoryOutputPipe;
use wasmtime_wasi::{WasiCtx, WasiCtxBuilder, WasiCtxView, WasiView};
use wasmtime_wasi_http::WasiHttpCtx;
use wasmtime_wasi_http::p2::{WasiHttpCtxView, WasiHttpView};
use wrpc_runtime_wasmtime::{SharedResourceTable, WrpcCtx, WrpcCtxView, WrpcView};

use crate::local::LocalState;
use crate::outgoing::OutgoingHttp;
use crate::router::LinkRouter;

/// Bytes of stdout/stderr kept per invocation; the rest is dropped (and the write fails).
const STDIO_CAPACITY: usize = 64 << 10;

struct WrpcState {
    router: LinkRouter,
    shared: SharedResourceTable,
    timeout: Duration,
}

impl WrpcCtx<LinkRouter> for WrpcState {
    fn context(&self) {}

    fn client(&self) -> &LinkRouter {
        &self.router
    }

    fn shared_resources(&mut self) -> &mut SharedResourceTable {
        &mut self.shared
    }

    fn timeout(&self) -> Option<Duration> {
        Some(self.timeout)
    }
}

/// The data of one instance's store.
pub(crate) struct HostState {
    wasi: WasiCtx,
    table: ResourceTable,
    pub(crate) limits: StoreLimits,
    pub(crate) local: LocalState,
    wrpc: WrpcState,
    http: WasiHttpCtx,
    http_hooks: OutgoingHttp,
    stdout: MemoryOutputPipe,
    stderr: MemoryOutputPipe,
}

impl HostState {
    pub(crate) fn new(
        local: LocalState,
        router: LinkRouter,
        max_memory_bytes: usize,
        call_timeout: Duration,
    ) -> Self {
        let stdout = MemoryOutputPipe::new(STDIO_CAPACITY);
        let stderr = MemoryOutputPipe::new(STDIO_CAPACITY);
        // No preopened directories, no sockets, no name lookups: a component reaches the
        // world only through its links.
        let wasi = WasiCtxBuilder::new()
            .stdout(stdout.clone())
            .stderr(stderr.clone())
            .allow_tcp(false)
            .allow_udp(false)
            .allow_ip_name_lookup(false)
            .build();
        Self {
            wasi,
            table: ResourceTable::new(),
            limits: StoreLimitsBuilder::new()
                .memory_size(max_memory_bytes)
                .instances(64)
                .tables(64)
                .memories(8)
                .trap_on_grow_failure(true)
                .build(),
            local,
            http_hooks: OutgoingHttp::new(router.clone()),
            wrpc: WrpcState {
                router,
                shared: SharedResourceTable::default(),
                timeout: call_timeout,
            },
            http: WasiHttpCtx::new(),
            stdout,
            stderr,
        }
    }
}

impl HostState {
    /// The store's resource table.
    pub(crate) fn table(&mut self) -> &mut ResourceTable {
        &mut self.table
    }

    /// The secrets granted to the component.
    pub(crate) fn secrets(&self) -> &crate::secrets::Secrets {
        &self.local.secrets
    }

    /// The router of this component's calls over the lattice.
    pub(crate) fn router(&self) -> &LinkRouter {
        &self.wrpc.router
    }
}

impl Drop for HostState {
    fn drop(&mut self) {
        // The instance is gone: what it printed goes to the host log.
        let component = &*self.local.component_id;
        for (stream, pipe) in [("stdout", &self.stdout), ("stderr", &self.stderr)] {
            let out = pipe.contents();
            if !out.is_empty() {
                tracing::info!(
                    component,
                    stream,
                    "{}",
                    String::from_utf8_lossy(&out).trim_end()
                );
            }
        }
    }
}

impl WasiView for HostState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl WasiHttpView for HostState {
    fn http(&mut self) -> WasiHttpCtxView<'_> {
        WasiHttpCtxView {
            ctx: &mut self.http,
            table: &mut self.table,
            hooks: &mut self.http_hooks,
        }
    }
}

impl WrpcView for HostState {
    type Invoke = LinkRouter;

    fn wrpc(&mut self) -> WrpcCtxView<'_, LinkRouter> {
        WrpcCtxView {
            ctx: &mut self.wrpc,
            table: &mut self.table,
        }
    }
}
