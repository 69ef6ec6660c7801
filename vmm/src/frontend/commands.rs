//! The VMM's QMP commands: each checks nothing the schema already checked, maps the call onto
//! a typed VMM operation (or static configuration), and shapes the answer as the schema says.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use petrel_qmp::dispatch::Reply;
use petrel_qmp::schema::commands as cmd;
use petrel_qmp::schema::types::{
    ChardevInfo, CommandLineOptionInfo, CommandLineParameterInfo, CommandLineParameterType,
    CpuInfo, CpuInstanceProperties, HotpluggableCPU, KvmInfo, NameInfo, RunState, StatusInfo,
    UuidInfo,
};
use petrel_qmp::schema::{Command, Empty};
use petrel_qmp::{QmpError, Registry};

use super::hmp::{self, HmpCommand, HmpFacts, HmpReply};
use crate::api::{ApiError, ApiSender, RunStatus, StatusCell, VmmAction, VmmData};
use crate::cli::params::{ParamType, OPTION_PARAMETERS};

/// QEMU's type name for `-cpu host` on x86_64, as query-hotpluggable-cpus reports it.
const CPU_TYPE: &str = "host-x86_64-cpu";

/// What the command handlers share.
pub struct CommandContext {
    /// The VMM.
    pub api: ApiSender,
    /// The published run state.
    pub status: Arc<StatusCell>,
    /// Static answers.
    pub facts: HmpFacts,
    /// `query-chardev`.
    pub chardevs: Vec<ChardevInfo>,
    /// vCPUs present.
    pub cpus: u32,
    /// Each monitor's current CPU (`cpu`); 0 when never set.
    pub current_cpu: Mutex<HashMap<u64, u32>>,
}

impl CommandContext {
    fn current_cpu(&self, monitor: u64) -> u32 {
        *self
            .current_cpu
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&monitor)
            .unwrap_or(&0)
    }
}

/// A VMM error as a QMP error, with QEMU's class.
fn failed(e: ApiError) -> QmpError {
    match e {
        ApiError::Failed(m) => QmpError::generic(m),
        ApiError::DeviceNotFound(m) => QmpError::device_not_found(m),
        ApiError::DeviceNotActive(m) => QmpError {
            class: petrel_qmp::ErrorClass::DeviceNotActive,
            desc: m,
        },
    }
}

/// Sends `action` to the VMM; `map` shapes its answer on the VMM thread.
pub(super) fn call<T: serde::Serialize + 'static>(
    api: &ApiSender,
    action: VmmAction,
    reply: Reply<T>,
    map: impl FnOnce(VmmData) -> Result<T, QmpError> + Send + 'static,
) {
    api.send(
        action,
        Box::new(move |res| reply.send(res.map_err(failed).and_then(map))),
    );
}

pub(super) fn empty(_: VmmData) -> Result<Empty, QmpError> {
    Ok(Empty {})
}

pub(super) fn unexpected(what: &str, data: VmmData) -> QmpError {
    QmpError::generic(format!("internal error: {what} answered {data:?}"))
}

fn run_state(s: RunStatus) -> RunState {
    match s {
        RunStatus::Prelaunch => RunState::Prelaunch,
        RunStatus::Running => RunState::Running,
        RunStatus::Paused => RunState::Paused,
        RunStatus::Shutdown => RunState::Shutdown,
        RunStatus::InternalError => RunState::InternalError,
        RunStatus::Suspended => RunState::Suspended,
        RunStatus::IoError => RunState::IoError,
    }
}

/// Registers every VMM command.
pub fn register(reg: &mut Registry, ctx: Arc<CommandContext>) {
    let c = ctx.clone();
    reg.register::<cmd::QueryStatus, _>(move |_, _, reply| {
        let status = c.status.get();
        reply.ok(StatusInfo {
            running: status == RunStatus::Running,
            singlestep: false,
            status: run_state(status),
        });
    });
    simple::<cmd::Stop>(reg, &ctx, VmmAction::Stop);
    simple::<cmd::Cont>(reg, &ctx, VmmAction::Cont);
    simple::<cmd::SystemReset>(reg, &ctx, VmmAction::SystemReset);
    simple::<cmd::SystemPowerdown>(reg, &ctx, VmmAction::SystemPowerdown);
    simple::<cmd::SystemWakeup>(reg, &ctx, VmmAction::SystemWakeup);
    simple::<cmd::InjectNmi>(reg, &ctx, VmmAction::InjectNmi);
    simple::<cmd::Quit>(reg, &ctx, VmmAction::Quit);

    let c = ctx.clone();
    reg.register::<cmd::QueryName, _>(move |_, _, reply| {
        reply.ok(NameInfo {
            name: c.facts.name.clone(),
        })
    });
    let c = ctx.clone();
    reg.register::<cmd::QueryUuid, _>(move |_, _, reply| {
        reply.ok(UuidInfo {
            uuid: c.facts.uuid.clone(),
        })
    });
    reg.register::<cmd::QueryKvm, _>(|_, _, reply| {
        reply.ok(KvmInfo {
            enabled: true,
            present: true,
        })
    });
    let c = ctx.clone();
    reg.register::<cmd::QueryChardev, _>(move |_, _, reply| reply.ok(c.chardevs.clone()));
    reg.register::<cmd::QueryCommandLineOptions, _>(|_, args, reply| {
        reply.send(command_line_options(args.option.as_deref()))
    });

    let c = ctx.clone();
    reg.register::<cmd::Cpu, _>(move |call, args, reply| {
        if args.index < 0 || args.index >= i64::from(c.cpus) {
            return reply.err(QmpError::generic("Invalid CPU index"));
        }
        c.current_cpu
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(call.monitor, args.index as u32);
        reply.ok(Empty {});
    });

    let c = ctx.clone();
    reg.register::<cmd::QueryCpus, _>(move |call, _, reply| {
        let current = c.current_cpu(call.monitor);
        call_cpus(&c.api, reply, move |cpus| {
            cpus.into_iter()
                .map(|s| CpuInfo {
                    cpu: i64::from(s.index),
                    current: s.index == current,
                    halted: s.halted,
                    pc: Some(s.pc as i64),
                    nip: None,
                    npc: None,
                    pc_2: None,
                    thread_id: i64::from(s.thread_id),
                })
                .collect()
        });
    });

    let c = ctx.clone();
    reg.register::<cmd::QueryHotpluggableCpus, _>(move |_, _, reply| {
        call(
            &c.api,
            VmmAction::QueryHotpluggableCpus,
            reply,
            |data| match data {
                VmmData::CpuSlots(slots) => Ok(slots
                    .into_iter()
                    .map(|s| HotpluggableCPU {
                        r#type: CPU_TYPE.into(),
                        vcpus_count: 1,
                        props: CpuInstanceProperties {
                            socket_id: Some(i64::from(s.socket)),
                            die_id: Some(i64::from(s.die)),
                            core_id: Some(i64::from(s.core)),
                            thread_id: Some(i64::from(s.thread)),
                            ..Default::default()
                        },
                        qom_path: s
                            .present_index
                            .map(|i| format!("/machine/unattached/device[{i}]")),
                    })
                    .collect()),
                other => Err(unexpected("query-hotpluggable-cpus", other)),
            },
        )
    });

    let c = ctx;
    reg.register::<cmd::HumanMonitorCommand, _>(move |call, args, reply| {
        let current = match args.cpu_index {
            None => c.current_cpu(call.monitor),
            Some(i) if (0..i64::from(c.cpus)).contains(&i) => i as u32,
            Some(_) => return reply.err(QmpError::generic("Invalid CPU index")),
        };
        match hmp::parse(&args.command_line, &c.facts) {
            HmpCommand::Text(text) => reply.ok(text),
            HmpCommand::Vmm(action, kind) => call_hmp(&c.api, action, kind, current, reply),
        }
    });
}

/// A command without arguments or data that is one VMM operation.
fn simple<C>(reg: &mut Registry, ctx: &Arc<CommandContext>, action: VmmAction)
where
    C: Command<Args = Empty, Returns = Empty>,
{
    let api = ctx.api.clone();
    reg.register::<C, _>(move |_, _, reply| call(&api, action.clone(), reply, empty));
}

fn call_cpus<T: serde::Serialize + 'static>(
    api: &ApiSender,
    reply: Reply<T>,
    map: impl FnOnce(Vec<crate::api::CpuState>) -> T + Send + 'static,
) {
    call(api, VmmAction::QueryCpus, reply, |data| match data {
        VmmData::Cpus(cpus) => Ok(map(cpus)),
        other => Err(unexpected("query-cpus", other)),
    });
}

fn call_hmp(
    api: &ApiSender,
    action: VmmAction,
    kind: HmpReply,
    current: u32,
    reply: Reply<String>,
) {
    call(api, action, reply, move |data| {
        Ok(match (kind, data) {
            (HmpReply::Silent, _) => String::new(),
            (HmpReply::Status, VmmData::Status(s)) => hmp::status_text(s),
            (HmpReply::Cpus, VmmData::Cpus(cpus)) => hmp::cpus_text(&cpus, current),
            (HmpReply::Network, VmmData::Net(crate::api::net::NetData::Text(t))) => t,
            (_, other) => return Err(unexpected("human-monitor-command", other)),
        })
    });
}

fn command_line_options(option: Option<&str>) -> Result<Vec<CommandLineOptionInfo>, QmpError> {
    let list: Vec<CommandLineOptionInfo> = OPTION_PARAMETERS
        .iter()
        .filter(|(name, _)| option.is_none_or(|o| o == *name))
        .map(|(name, params)| CommandLineOptionInfo {
            option: (*name).into(),
            parameters: params
                .iter()
                .map(|(p, t)| CommandLineParameterInfo {
                    name: (*p).into(),
                    r#type: match t {
                        ParamType::String => CommandLineParameterType::String,
                        ParamType::Boolean => CommandLineParameterType::Boolean,
                        ParamType::Number => CommandLineParameterType::Number,
                        ParamType::Size => CommandLineParameterType::Size,
                    },
                    help: None,
                    default: None,
                })
                .collect(),
        })
        .collect();
    if option.is_some() && list.is_empty() {
        return Err(QmpError::generic(
            "Parameter 'option' expects an option name",
        ));
    }
    Ok(list)
}
