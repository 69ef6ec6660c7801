//! The memory dump commands: `dump-guest-memory`, `query-dump`, `memsave` and `pmemsave`.

use std::sync::Arc;

use petrel_qmp::schema::commands as cmd;
use petrel_qmp::schema::types::{DumpQueryResult, DumpStatus};
use petrel_qmp::Registry;

use super::commands::{call, empty, unexpected, CommandContext};
use crate::api::dump::{self, DumpArgs, DumpData, DumpProgress, DumpRequest, MonitorFds};
use crate::api::{VmmAction, VmmData};

/// A dump's progress as the schema's DumpQueryResult.
pub(super) fn query_result(p: DumpProgress) -> DumpQueryResult {
    DumpQueryResult {
        status: match p.status {
            dump::DumpStatus::None => DumpStatus::None,
            dump::DumpStatus::Active => DumpStatus::Active,
            dump::DumpStatus::Completed => DumpStatus::Completed,
            dump::DumpStatus::Failed => DumpStatus::Failed,
        },
        completed: i64::try_from(p.completed).unwrap_or(i64::MAX),
        total: i64::try_from(p.total).unwrap_or(i64::MAX),
    }
}

fn action(req: DumpRequest) -> VmmAction {
    VmmAction::Dump(Box::new(req))
}

/// Registers the dump commands.
pub fn register(reg: &mut Registry, ctx: &Arc<CommandContext>) {
    let api = ctx.api.clone();
    reg.register::<cmd::DumpGuestMemory, _>(move |call_ctx, args, reply| {
        let req = DumpRequest::Start(DumpArgs {
            paging: args.paging,
            protocol: args.protocol,
            detach: args.detach.unwrap_or(false),
            begin: args.begin,
            length: args.length,
            fds: MonitorFds(call_ctx.fds.clone()),
        });
        call(&api, action(req), reply, empty)
    });
    let api = ctx.api.clone();
    reg.register::<cmd::QueryDump, _>(move |_, _, reply| {
        call(&api, action(DumpRequest::Query), reply, |d| match d {
            VmmData::Dump(DumpData::Progress(p)) => Ok(query_result(p)),
            other => Err(unexpected("query-dump", other)),
        })
    });
    let api = ctx.api.clone();
    reg.register::<cmd::Memsave, _>(move |_, args, reply| {
        let req = DumpRequest::MemSave {
            addr: args.val,
            size: args.size,
            path: args.filename.into(),
            cpu_index: args.cpu_index,
        };
        call(&api, action(req), reply, empty)
    });
    let api = ctx.api.clone();
    reg.register::<cmd::Pmemsave, _>(move |_, args, reply| {
        let req = DumpRequest::PmemSave {
            addr: args.val,
            size: args.size,
            path: args.filename.into(),
        };
        call(&api, action(req), reply, empty)
    });
}
