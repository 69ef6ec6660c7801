//! The commands the server answers itself, because they are about the protocol or the
//! monitor: registered into the VMM's registry by [`register`].

use std::os::fd::AsFd;
use std::sync::Arc;

use super::core::{Msg, Shared};
use super::sys;
use crate::dispatch::Registry;
use crate::error::{ErrorClass, QmpError};
use crate::schema::commands::{
    AddClient, Closefd, Getfd, QmpCapabilities, QueryCommands, QueryEvents, QueryQmpSchema,
    QueryVersion,
};
use crate::schema::types::{CommandInfo, EventInfo, QMPCapability, VersionInfo, VersionTriple};
use crate::schema::{events::ALL_EVENTS, introspect, Empty};

pub(super) fn register(registry: &mut Registry, shared: &Arc<Shared>) {
    let s = shared.clone();
    registry.register::<QmpCapabilities, _>(move |ctx, args, reply| {
        let mut monitors = s.monitors.lock().unwrap_or_else(|e| e.into_inner());
        let Some(mon) = monitors.get_mut(&ctx.monitor) else {
            return reply.err(QmpError::generic("the monitor is gone"));
        };
        if mon.negotiated {
            return reply.err(QmpError {
                class: ErrorClass::CommandNotFound,
                desc: "Capabilities negotiation is already complete, command ignored".into(),
            });
        }
        let enable = args.enable.unwrap_or_default();
        let mut unavailable: Vec<&str> = Vec::new();
        for cap in &enable {
            let offered = match cap {
                QMPCapability::Oob => mon.oob_offered,
            };
            if !offered {
                unavailable.push(match cap {
                    QMPCapability::Oob => "oob",
                });
            }
        }
        if !unavailable.is_empty() {
            return reply.err(QmpError::generic(format!(
                "Capability {} not available",
                unavailable.join(", ")
            )));
        }
        mon.accepted = Some(enable.contains(&QMPCapability::Oob));
        reply.ok(Empty {});
    });

    let s = shared.clone();
    registry.register::<QueryCommands, _>(move |_ctx, _args, reply| {
        let names = s.command_names.get().map(Vec::as_slice).unwrap_or_default();
        reply.ok(names
            .iter()
            .map(|n| CommandInfo {
                name: (*n).to_string(),
            })
            .collect());
    });

    registry.register::<QueryEvents, _>(|_ctx, _args, reply| {
        reply.ok(ALL_EVENTS
            .iter()
            .map(|n| EventInfo {
                name: (*n).to_string(),
            })
            .collect());
    });

    let s = shared.clone();
    registry.register::<QueryQmpSchema, _>(move |_ctx, _args, reply| {
        let schema = s.schema.get_or_init(|| {
            let names = s.command_names.get().map(Vec::as_slice).unwrap_or_default();
            introspect::schema_info(names, ALL_EVENTS)
        });
        reply.into_inner().reply(Ok(schema.clone()));
    });

    let s = shared.clone();
    registry.register::<QueryVersion, _>(move |_ctx, _args, reply| {
        let c = &s.config;
        reply.ok(VersionInfo {
            qemu: VersionTriple {
                major: c.major as i64,
                minor: c.minor as i64,
                micro: c.micro as i64,
            },
            package: c.package.clone(),
        });
    });

    registry.register::<Getfd, _>(|ctx, args, reply| {
        // QEMU takes the first descriptor that came with the message.
        let Some(fd) = ctx.received_fds.into_iter().next() else {
            return reply.err(QmpError::generic(
                "No file descriptor supplied via SCM_RIGHTS",
            ));
        };
        if args.fdname.starts_with(|c: char| c.is_ascii_digit()) {
            return reply.err(QmpError::generic(
                "Parameter 'fdname' expects a name not starting with a digit",
            ));
        }
        ctx.fds
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(args.fdname, fd);
        reply.ok(Empty {});
    });

    registry.register::<Closefd, _>(|ctx, args, reply| {
        let removed = ctx
            .fds
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&args.fdname);
        match removed {
            Some(fd) => {
                drop(fd);
                reply.ok(Empty {});
            }
            None => reply.err(QmpError::generic(format!(
                "File descriptor named '{}' not found",
                args.fdname
            ))),
        }
    });

    let s = shared.clone();
    registry.register::<AddClient, _>(move |ctx, args, reply| {
        // As QEMU: the descriptor is taken from the monitor first, then the protocol checked.
        let fd = ctx
            .fds
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&args.fdname);
        let Some(fd) = fd else {
            return reply.err(QmpError::generic(format!(
                "File descriptor named '{}' has not been found",
                args.fdname
            )));
        };
        if args.protocol != "qmp" {
            return reply.err(QmpError::generic(format!(
                "protocol '{}' is invalid",
                args.protocol
            )));
        }
        let usable = matches!(sys::socket_type(fd.as_fd()), Ok(Some(libc::SOCK_STREAM)))
            && matches!(sys::is_listening(fd.as_fd()), Ok(false));
        if !usable {
            return reply.err(QmpError::generic("failed to add client"));
        }
        s.push(Msg::AddClient(fd));
        reply.ok(Empty {});
    });
}
