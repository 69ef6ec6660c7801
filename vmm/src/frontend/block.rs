//! The block and PCI QMP commands: each maps onto a block-layer request or `QueryPci`, and
//! the answers are checked against the schema's types on their way out.

use std::sync::Arc;

use petrel_block::throttle::ThrottleConfig;
use petrel_qmp::dispatch::Reply;
use petrel_qmp::schema::commands as cmd;
use petrel_qmp::schema::types::{
    BlockIOThrottle, PciDeviceClass, PciDeviceId, PciDeviceInfo, PciInfo, PciMemoryRegion,
};
use petrel_qmp::schema::{Command, Empty};
use petrel_qmp::{QmpError, Registry};

use super::commands::{call, empty, unexpected, CommandContext};
use crate::api::block::{BlockData, BlockRequest};
use crate::api::pci::PciFunctionInfo;
use crate::api::{ApiSender, VmmAction, VmmData};

/// Sends a block request; `map` shapes the answer.
fn block<T: serde::Serialize + 'static>(
    api: &ApiSender,
    req: BlockRequest,
    reply: Reply<T>,
    map: impl FnOnce(VmmData) -> Result<T, QmpError> + Send + 'static,
) {
    call(api, VmmAction::Block(Box::new(req)), reply, map);
}

/// Converts the VMM's QAPI-shaped answer into the schema's type, so a shape error is caught
/// here rather than by clients.
pub(super) fn typed<T: serde::de::DeserializeOwned>(
    value: impl serde::Serialize,
) -> Result<T, QmpError> {
    serde_json::to_value(value)
        .and_then(serde_json::from_value)
        .map_err(|e| {
            QmpError::generic(format!(
                "internal error: answer does not fit the schema: {e}"
            ))
        })
}

fn data<T: serde::de::DeserializeOwned>(d: VmmData) -> Result<T, QmpError> {
    match d {
        VmmData::Block(BlockData::Info(v)) => typed(v),
        VmmData::Block(BlockData::Stats(v)) => typed(v),
        VmmData::Block(BlockData::Nodes(v)) => typed(v),
        other => Err(unexpected("a block query", other)),
    }
}

/// `BlockIOThrottle` as the block layer's limits.
fn throttle(t: &BlockIOThrottle) -> ThrottleConfig {
    let len = |v: Option<i64>| v.map_or(1, |v| u64::try_from(v).unwrap_or(0));
    ThrottleConfig {
        bps: t.bps,
        bps_rd: t.bps_rd,
        bps_wr: t.bps_wr,
        iops: t.iops,
        iops_rd: t.iops_rd,
        iops_wr: t.iops_wr,
        bps_max: t.bps_max.unwrap_or(0),
        bps_rd_max: t.bps_rd_max.unwrap_or(0),
        bps_wr_max: t.bps_wr_max.unwrap_or(0),
        iops_max: t.iops_max.unwrap_or(0),
        iops_rd_max: t.iops_rd_max.unwrap_or(0),
        iops_wr_max: t.iops_wr_max.unwrap_or(0),
        bps_max_length: len(t.bps_max_length),
        bps_rd_max_length: len(t.bps_rd_max_length),
        bps_wr_max_length: len(t.bps_wr_max_length),
        iops_max_length: len(t.iops_max_length),
        iops_rd_max_length: len(t.iops_rd_max_length),
        iops_wr_max_length: len(t.iops_wr_max_length),
        iops_size: t.iops_size.map_or(0, |v| u64::try_from(v).unwrap_or(0)),
        group: t.group.clone(),
    }
}

/// Registers the block-device and PCI commands.
pub fn register(reg: &mut Registry, ctx: &Arc<CommandContext>) {
    let api = ctx.api.clone();
    reg.register::<cmd::QueryBlock, _>(move |_, _, reply| {
        block(&api, BlockRequest::QueryBlock, reply, data)
    });
    let api = ctx.api.clone();
    reg.register::<cmd::QueryBlockstats, _>(move |_, args, reply| {
        let nodes = args.query_nodes.unwrap_or(false);
        block(&api, BlockRequest::QueryStats { nodes }, reply, data)
    });
    let api = ctx.api.clone();
    reg.register::<cmd::QueryNamedBlockNodes, _>(move |_, _, reply| {
        block(&api, BlockRequest::QueryNodes, reply, data)
    });
    let api = ctx.api.clone();
    reg.register::<cmd::BlockResize, _>(move |_, args, reply| {
        let req = BlockRequest::Resize {
            device: args.device,
            node_name: args.node_name,
            size: args.size,
        };
        block(&api, req, reply, empty)
    });
    let api = ctx.api.clone();
    reg.register::<cmd::BlockSetIoThrottle, _>(move |_, args, reply| {
        let req = BlockRequest::SetThrottle {
            config: throttle(&args),
            device: args.device,
            id: args.id,
        };
        block(&api, req, reply, empty)
    });
    let api = ctx.api.clone();
    reg.register::<cmd::BlockdevAdd, _>(move |_, args, reply| match serde_json::to_value(&args) {
        Ok(json) => block(&api, BlockRequest::Add(json), reply, empty),
        Err(e) => reply.err(QmpError::generic(e.to_string())),
    });
    let api = ctx.api.clone();
    reg.register::<cmd::XBlockdevDel, _>(move |_, args, reply| {
        let req = BlockRequest::Del {
            node_name: args.node_name,
        };
        block(&api, req, reply, empty)
    });
    let api = ctx.api.clone();
    reg.register::<cmd::ChangeBackingFile, _>(move |_, args, reply| {
        let req = BlockRequest::ChangeBackingFile {
            device: args.device,
            image_node_name: args.image_node_name,
            backing_file: args.backing_file,
        };
        block(&api, req, reply, empty)
    });
    let api = ctx.api.clone();
    reg.register::<cmd::BlockSetWriteThreshold, _>(move |_, args, reply| {
        let Ok(threshold) = u64::try_from(args.write_threshold) else {
            return reply.err(QmpError::generic(
                "Parameter 'write-threshold' expects uint64",
            ));
        };
        let req = BlockRequest::SetWriteThreshold {
            node_name: args.node_name,
            threshold,
        };
        block(&api, req, reply, empty)
    });
    register_removable(reg, ctx);

    let api = ctx.api.clone();
    reg.register::<cmd::QueryPci, _>(move |_, _, reply| {
        call(&api, VmmAction::QueryPci, reply, |d| match d {
            VmmData::Pci(f) => Ok(vec![PciInfo {
                bus: 0,
                devices: f.iter().map(pci_device).collect(),
            }]),
            other => Err(unexpected("query-pci", other)),
        })
    });
}

/// A removable-media command's `device` and `id` arguments.
type DiskTarget = (Option<String>, Option<String>);

/// Registers `C`, a command for removable media, which virtio disks are not: it finds the
/// disk that `target` names in its arguments as QEMU does (so a wrong name gets QEMU's
/// error), and the block layer then refuses.
fn removable<C>(reg: &mut Registry, ctx: &Arc<CommandContext>, target: fn(C::Args) -> DiskTarget)
where
    C: Command<Returns = Empty>,
{
    let api = ctx.api.clone();
    reg.register::<C, _>(move |_, args, reply| {
        let (device, id) = target(args);
        block(&api, BlockRequest::Removable { device, id }, reply, empty)
    });
}

/// The removable-media commands, and `block_passwd`, which petrel (opening no encrypted
/// images) refuses after finding the disk.
fn register_removable(reg: &mut Registry, ctx: &Arc<CommandContext>) {
    removable::<cmd::Eject>(reg, ctx, |a| (a.device, a.id));
    removable::<cmd::BlockdevOpenTray>(reg, ctx, |a| (a.device, a.id));
    removable::<cmd::BlockdevCloseTray>(reg, ctx, |a| (a.device, a.id));
    removable::<cmd::XBlockdevRemoveMedium>(reg, ctx, |a| (a.device, a.id));
    removable::<cmd::XBlockdevInsertMedium>(reg, ctx, |a| (a.device, a.id));
    removable::<cmd::BlockdevChangeMedium>(reg, ctx, |a| (a.device, a.id));
    removable::<cmd::Change>(reg, ctx, |a| (Some(a.device), None));
    let api = ctx.api.clone();
    reg.register::<cmd::BlockPasswd, _>(move |_, a, reply| {
        let req = BlockRequest::Passwd {
            device: a.device,
            node_name: a.node_name,
        };
        block(&api, req, reply, empty)
    });
}

/// QEMU's class names for the classes petrel's functions have.
fn class_desc(class: u16) -> Option<&'static str> {
    Some(match class {
        0x0100 => "SCSI controller",
        0x0200 => "Ethernet controller",
        0x0600 => "Host bridge",
        0x0601 => "ISA bridge",
        0x0500 => "RAM controller",
        _ => return None,
    })
}

fn pci_device(f: &PciFunctionInfo) -> PciDeviceInfo {
    PciDeviceInfo {
        bus: i64::from(f.bus),
        slot: i64::from(f.slot),
        function: i64::from(f.function),
        class_info: PciDeviceClass {
            desc: class_desc(f.class).map(str::to_string),
            class: i64::from(f.class),
        },
        id: PciDeviceId {
            device: i64::from(f.device),
            vendor: i64::from(f.vendor),
            subsystem: Some(i64::from(f.subsystem)),
            subsystem_vendor: Some(i64::from(f.subsystem_vendor)),
        },
        irq: (f.irq_pin != 0).then_some(i64::from(f.irq_line)),
        irq_pin: i64::from(f.irq_pin),
        qdev_id: f.qdev_id.clone(),
        pci_bridge: None,
        regions: f
            .regions
            .iter()
            .map(|r| PciMemoryRegion {
                bar: i64::from(r.bar),
                r#type: if r.io { "io" } else { "memory" }.into(),
                address: r.address.map_or(-1, |a| a as i64),
                size: r.size as i64,
                prefetch: (!r.io).then_some(r.prefetch),
                mem_type_64: (!r.io).then_some(r.mem_type_64),
            })
            .collect(),
    }
}
