//! The network QMP commands: each maps onto a network-layer request.

use std::sync::Arc;

use petrel_qmp::dispatch::{CallContext, Reply};
use petrel_qmp::schema::commands as cmd;
use petrel_qmp::schema::types::{Netdev, NetdevBranch, RxFilterInfo};
use petrel_qmp::QmpError;

use super::block::typed;
use super::commands::{call, empty, unexpected, CommandContext};
use crate::api::net::{NetData, NetRequest, PassedFd};
use crate::api::{ApiSender, VmmAction, VmmData};

fn net<T: serde::Serialize + 'static>(
    api: &ApiSender,
    req: NetRequest,
    reply: Reply<T>,
    map: impl FnOnce(VmmData) -> Result<T, QmpError> + Send + 'static,
) {
    call(api, VmmAction::Net(Box::new(req)), reply, map);
}

/// The descriptor a netdev's `fd=` names: a number is used as it is (as QEMU does), a name
/// is taken from the monitor's `getfd` store.
fn named_fd(ctx: &CallContext, netdev: &Netdev) -> Result<Option<PassedFd>, QmpError> {
    let fd = match &netdev.branch {
        NetdevBranch::Tap(t) => t.fd.as_deref(),
        NetdevBranch::Socket(s) => s.fd.as_deref(),
        _ => None,
    };
    let Some(name) = fd.filter(|f| !f.starts_with(|c: char| c.is_ascii_digit())) else {
        return Ok(None);
    };
    let taken = ctx
        .fds
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .remove(name);
    match taken {
        Some(fd) => Ok(Some(PassedFd::new(fd))),
        None => Err(QmpError::generic(format!(
            "File descriptor named '{name}' has not been found"
        ))),
    }
}

/// A netdev the command line would refuse, as `netdev_add` words it.
fn netdev_error(e: crate::cli::error::ArgError) -> String {
    match e {
        crate::cli::error::ArgError::InvalidId => "Parameter 'id' expects an identifier".into(),
        other => other.to_string(),
    }
}

/// Registers `netdev_add`, `netdev_del`, `set_link` and `query-rx-filter`.
pub fn register(reg: &mut petrel_qmp::Registry, ctx: &Arc<CommandContext>) {
    let api = ctx.api.clone();
    reg.register::<cmd::NetdevAdd, _>(move |call_ctx, args, reply| {
        let checked = serde_json::to_value(&args)
            .map_err(|e| e.to_string())
            .and_then(|v| crate::cli::check_netdev(v).map_err(netdev_error));
        let json = match checked {
            Ok(json) => json,
            Err(e) => return reply.err(QmpError::generic(e)),
        };
        match named_fd(&call_ctx, &args) {
            Ok(fd) => net(&api, NetRequest::Add { netdev: json, fd }, reply, empty),
            Err(e) => reply.err(e),
        }
    });
    let api = ctx.api.clone();
    reg.register::<cmd::NetdevDel, _>(move |_, args, reply| {
        net(&api, NetRequest::Del { id: args.id }, reply, empty)
    });
    let api = ctx.api.clone();
    reg.register::<cmd::SetLink, _>(move |_, args, reply| {
        let req = NetRequest::SetLink {
            name: args.name,
            up: args.up,
        };
        net(&api, req, reply, empty)
    });
    let api = ctx.api.clone();
    reg.register::<cmd::QueryRxFilter, _>(move |_, args, reply| {
        let req = NetRequest::QueryRxFilter { name: args.name };
        net(&api, req, reply, |d| match d {
            VmmData::Net(NetData::RxFilters(v)) => typed::<Vec<RxFilterInfo>>(v),
            other => Err(unexpected("query-rx-filter", other)),
        })
    });
}
