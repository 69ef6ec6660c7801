//! The balloon and memory QMP commands: `balloon`, `query-balloon` and `query-memdev` map
//! onto balloon requests; `query-memory-devices` lists petrel's memory devices.

use std::sync::Arc;

use petrel_qmp::schema::commands as cmd;
use petrel_qmp::schema::types::{BalloonInfo, HostMemPolicy, Memdev};
use petrel_qmp::Registry;

use super::commands::{call, empty, unexpected, CommandContext};
use crate::api::balloon::{BalloonData, BalloonRequest};
use crate::api::{VmmAction, VmmData};

fn action(req: BalloonRequest) -> VmmAction {
    VmmAction::Balloon(Box::new(req))
}

/// Registers `balloon`, `query-balloon`, `query-memdev` and `query-memory-devices`.
pub fn register(reg: &mut Registry, ctx: &Arc<CommandContext>) {
    let api = ctx.api.clone();
    reg.register::<cmd::Balloon, _>(move |_, args, reply| {
        let req = BalloonRequest::SetTarget { value: args.value };
        call(&api, action(req), reply, empty)
    });
    let api = ctx.api.clone();
    reg.register::<cmd::QueryBalloon, _>(move |_, _, reply| {
        call(&api, action(BalloonRequest::Query), reply, |d| match d {
            VmmData::Balloon(BalloonData::Actual(actual)) => Ok(BalloonInfo { actual }),
            other => Err(unexpected("query-balloon", other)),
        })
    });
    let api = ctx.api.clone();
    reg.register::<cmd::QueryMemdev, _>(move |_, _, reply| {
        call(
            &api,
            action(BalloonRequest::QueryMemdev),
            reply,
            |d| match d {
                VmmData::Balloon(BalloonData::Memdevs(list)) => Ok(list
                    .into_iter()
                    .map(|m| Memdev {
                        id: Some(m.id),
                        size: m.size,
                        merge: m.merge,
                        dump: m.dump,
                        prealloc: m.prealloc,
                        share: m.share,
                        reserve: Some(m.reserve),
                        // petrel binds guest RAM to no NUMA node.
                        host_nodes: Vec::new(),
                        policy: HostMemPolicy::Default,
                    })
                    .collect::<Vec<_>>()),
                other => Err(unexpected("query-memdev", other)),
            },
        )
    });
    // petrel has no memory device models (DIMMs, NVDIMMs, virtio-mem, virtio-pmem, SGX EPC):
    // `-device` refuses them, and guest RAM is not a memory device, as in QEMU.
    reg.register::<cmd::QueryMemoryDevices, _>(move |_, _, reply| reply.ok(Vec::new()));
}
