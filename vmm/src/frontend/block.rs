//! The block and PCI QMP commands: each maps onto a block-layer request or `QueryPci`, and
//! the answers are checked against the schema's types on their way out.

use std::sync::Arc;

use petrel_block::throttle::ThrottleConfig;
use petrel_qmp::dispatch::Reply;
use petrel_qmp::schema::commands as cmd;
use petrel_qmp::schema::types::{
    BlockIOThrottle, PciDeviceClass, PciDeviceId, PciDeviceInfo, PciInfo, PciMemoryRegion,
};
use petrel_qmp::schema::Empty;
use petrel_qmp::{QmpError, Registry};

use super::commands::CommandContext;
use crate::api::block::{BlockData, BlockRequest};
use crate::api::pci::PciFunctionInfo;
use crate::api::{ApiError, ApiSender, VmmAction, VmmData};

fn api_error(e: ApiError) -> QmpError {
    match e {
        ApiError::Failed(m) => QmpError::generic(m),
        ApiError::DeviceNotFound(m) => QmpError::device_not_found(m),
    }
}

/// Sends a block request; `map` shapes the answer.
fn block<T: serde::Serialize + 'static>(
    api: &ApiSender,
    req: BlockRequest,
    reply: Reply<T>,
    map: impl FnOnce(VmmData) -> Result<T, QmpError> + Send + 'static,
) {
    api.send(
        VmmAction::Block(Box::new(req)),
        Box::new(move |res| reply.send(res.map_err(api_error).and_then(map))),
    );
}

fn empty(_: VmmData) -> Result<Empty, QmpError> {
    Ok(Empty {})
}

/// Converts the VMM's QAPI-shaped answer into the schema's type, so a shape error is caught
/// here rather than by clients.
fn typed<T: serde::de::DeserializeOwned>(value: impl serde::Serialize) -> Result<T, QmpError> {
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
        other => Err(QmpError::generic(format!(
            "internal error: unexpected answer {other:?}"
        ))),
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
        let req = BlockRequest::SetWriteThreshold {
            node_name: args.node_name,
            threshold: u64::try_from(args.write_threshold).unwrap_or(0),
        };
        block(&api, req, reply, empty)
    });
    register_removable(reg, ctx);

    let api = ctx.api.clone();
    reg.register::<cmd::QueryPci, _>(move |_, _, reply| {
        api.send(
            VmmAction::QueryPci,
            Box::new(move |res| {
                reply.send(res.map_err(api_error).and_then(|d| match d {
                    VmmData::Pci(f) => Ok(vec![PciInfo {
                        bus: 0,
                        devices: f.iter().map(pci_device).collect(),
                    }]),
                    other => Err(QmpError::generic(format!(
                        "internal error: unexpected answer {other:?}"
                    ))),
                }))
            }),
        )
    });
}

/// The commands for removable media, which virtio disks are not: each finds the disk as QEMU
/// does (so a wrong name gets QEMU's error) and then refuses.
fn register_removable(reg: &mut Registry, ctx: &Arc<CommandContext>) {
    fn removable(api: &ApiSender, device: Option<String>, id: Option<String>, reply: Reply<Empty>) {
        block(api, BlockRequest::Removable { device, id }, reply, empty)
    }
    let api = ctx.api.clone();
    reg.register::<cmd::Eject, _>(move |_, a, reply| removable(&api, a.device, a.id, reply));
    let api = ctx.api.clone();
    reg.register::<cmd::BlockdevOpenTray, _>(move |_, a, reply| {
        removable(&api, a.device, a.id, reply)
    });
    let api = ctx.api.clone();
    reg.register::<cmd::BlockdevCloseTray, _>(move |_, a, reply| {
        removable(&api, a.device, a.id, reply)
    });
    let api = ctx.api.clone();
    reg.register::<cmd::XBlockdevRemoveMedium, _>(move |_, a, reply| {
        removable(&api, a.device, a.id, reply)
    });
    let api = ctx.api.clone();
    reg.register::<cmd::XBlockdevInsertMedium, _>(move |_, a, reply| {
        removable(&api, a.device, a.id, reply)
    });
    let api = ctx.api.clone();
    reg.register::<cmd::BlockdevChangeMedium, _>(move |_, a, reply| {
        removable(&api, a.device, a.id, reply)
    });
    let api = ctx.api.clone();
    reg.register::<cmd::Change, _>(move |_, a, reply| removable(&api, Some(a.device), None, reply));
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
        0x00ff => "Unclassified device",
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
