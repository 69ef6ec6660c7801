//! The QMP front end: monitors from the command line, QMP commands mapped onto typed VMM
//! operations ([`crate::api`]), and VMM events reported as QMP events.

mod balloon;
mod block;
mod commands;
mod dump;
mod events;
pub mod hmp;
mod net;

use std::os::fd::{FromRawFd, OwnedFd};
use std::sync::{Arc, Mutex};

use petrel_qmp::schema::types::ChardevInfo;
use petrel_qmp::server::{Server, ServerConfig, ServerHandle};
use petrel_qmp::Registry;
use thiserror::Error;

use crate::api::{ApiSender, EventSink, NoEvents, StatusCell};
use crate::cli::{ChardevBackend, ChardevSpec, Config};
use commands::CommandContext;
use hmp::HmpFacts;

/// Errors setting up monitors.
#[derive(Debug, Error)]
pub enum FrontendError {
    /// A monitor transport could not be set up.
    #[error("cannot set up QMP monitor '{label}'")]
    Monitor {
        /// The monitor's chardev label.
        label: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
}

/// The running front end.
pub struct Frontend {
    server: Option<ServerHandle>,
    events: Arc<dyn EventSink>,
}

/// How `query-chardev` and `info chardev` describe a backend, in QEMU's filename syntax.
fn filename(backend: &ChardevBackend) -> String {
    match backend {
        ChardevBackend::Stdio { .. } => "stdio".into(),
        ChardevBackend::File { path, .. } => format!("file:{}", path.display()),
        ChardevBackend::Null => "null".into(),
        ChardevBackend::SocketFd { fd } => format!("fd:{fd}"),
        ChardevBackend::UnixSocket { path, server, .. } => {
            format!(
                "unix:{}{}",
                path.display(),
                if *server { ",server=on" } else { "" }
            )
        }
        ChardevBackend::TcpSocket {
            host, port, server, ..
        } => {
            format!(
                "tcp:{host}:{port}{}",
                if *server { ",server=on" } else { "" }
            )
        }
    }
}

/// Every chardev with a frontend: serial ports (`serial0`...) and monitors.
fn chardevs(cfg: &Config) -> Vec<ChardevInfo> {
    let backend_of = |spec: &ChardevSpec| match spec {
        ChardevSpec::Backend(b) => b.clone(),
        ChardevSpec::Chardev(id) => cfg
            .chardevs
            .iter()
            .find(|(cid, _)| cid == id)
            .map(|(_, b)| b.clone())
            .expect("the parser checks chardev references"),
    };
    let serials = cfg.serials.iter().enumerate().map(|(i, spec)| {
        let label = match spec {
            ChardevSpec::Chardev(id) => id.clone(),
            ChardevSpec::Backend(_) => format!("serial{i}"),
        };
        (label, backend_of(spec))
    });
    let monitors = cfg
        .monitors
        .iter()
        .map(|m| (m.label.clone(), m.backend.clone()));
    serials
        .chain(monitors)
        .map(|(label, backend)| ChardevInfo {
            label,
            filename: filename(&backend),
            frontend_open: true,
        })
        .collect()
}

fn add_monitor(server: &mut Server, backend: &ChardevBackend) -> std::io::Result<()> {
    match backend {
        ChardevBackend::UnixSocket {
            path,
            server: true,
            wait,
        } => server.add_unix_listener(path, *wait),
        ChardevBackend::UnixSocket {
            path,
            server: false,
            ..
        } => server.connect_unix(path),
        ChardevBackend::TcpSocket {
            host,
            port,
            server: true,
            wait,
        } => server
            .add_tcp_listener((host.as_str(), *port), *wait)
            .map(|_| ()),
        ChardevBackend::TcpSocket {
            host,
            port,
            server: false,
            ..
        } => {
            let stream = std::net::TcpStream::connect((host.as_str(), *port))?;
            server.add_fd(OwnedFd::from(stream), false)
        }
        ChardevBackend::Stdio { .. } => server.add_stdio(),
        ChardevBackend::SocketFd { fd } => {
            // SAFETY: `fd=N` hands this descriptor to petrel for this monitor alone; the
            // server checks that it is a socket before using it.
            let owned = unsafe { OwnedFd::from_raw_fd(*fd) };
            server.add_fd(owned, false)
        }
        ChardevBackend::File { .. } | ChardevBackend::Null => Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            "a QMP monitor needs a socket or stdio",
        )),
    }
}

/// The registry of the VMM's commands for this configuration.
fn registry(
    cfg: &Config,
    api: ApiSender,
    status: Arc<StatusCell>,
    config: &ServerConfig,
) -> Registry {
    let facts = HmpFacts {
        version: format!(
            "{}.{}.{} ({})",
            config.major, config.minor, config.micro, config.package
        ),
        name: cfg.name.clone(),
        uuid: cfg.uuid.as_ref().map_or_else(
            || "00000000-0000-0000-0000-000000000000".to_string(),
            |u| u.to_string(),
        ),
        chardevs: chardevs(cfg)
            .into_iter()
            .map(|c| (c.label, c.filename))
            .collect(),
    };
    let ctx = Arc::new(CommandContext {
        api,
        status,
        chardevs: chardevs(cfg),
        facts,
        cpus: cfg.smp.cpus,
        current_cpu: Mutex::new(Default::default()),
    });
    let mut registry = Registry::new();
    balloon::register(&mut registry, &ctx);
    block::register(&mut registry, &ctx);
    dump::register(&mut registry, &ctx);
    net::register(&mut registry, &ctx);
    commands::register(&mut registry, ctx);
    registry
}

impl Frontend {
    /// Starts the monitors `cfg` asks for; with `wait=on` monitors, returns once each has a
    /// client.
    pub fn start(
        cfg: &Config,
        api: ApiSender,
        status: Arc<StatusCell>,
    ) -> Result<Frontend, FrontendError> {
        if cfg.monitors.is_empty() {
            return Ok(Frontend {
                server: None,
                events: Arc::new(NoEvents),
            });
        }
        let config = ServerConfig::default();
        let registry = registry(cfg, api, status, &config);
        let (mut server, handle) =
            Server::new(registry, config).map_err(|source| FrontendError::Monitor {
                label: "qmp".into(),
                source,
            })?;
        for m in &cfg.monitors {
            add_monitor(&mut server, &m.backend).map_err(|source| FrontendError::Monitor {
                label: m.label.clone(),
                source,
            })?;
        }
        server.start().map_err(|source| FrontendError::Monitor {
            label: "qmp".into(),
            source,
        })?;
        handle.wait_for_clients();
        // petrel's unattached devices are numbered in creation order: the boot CPUs first
        // (device[0..cpus], as query-hotpluggable-cpus reports them), then the RTC.
        let rtc_path = format!("/machine/unattached/device[{}]", cfg.smp.cpus);
        let events = Arc::new(events::QmpEvents::new(handle.clone(), rtc_path));
        Ok(Frontend {
            server: Some(handle),
            events,
        })
    }

    /// Where the VMM reports events.
    pub fn events(&self) -> Arc<dyn EventSink> {
        self.events.clone()
    }

    /// Whether any monitor is configured.
    pub fn has_monitors(&self) -> bool {
        self.server.is_some()
    }

    /// Delivers what is queued and stops the monitors.
    pub fn shutdown(self) {
        if let Some(s) = self.server {
            s.shutdown();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::RunStatus;

    /// The commands issue 4 requires; each must be dispatched.
    const REQUIRED: &[&str] = &[
        "qmp_capabilities",
        "query-version",
        "query-commands",
        "query-qmp-schema",
        "query-events",
        "query-command-line-options",
        "query-status",
        "query-name",
        "query-uuid",
        "query-kvm",
        "query-cpus",
        "query-hotpluggable-cpus",
        "stop",
        "cont",
        "quit",
        "system_reset",
        "system_powerdown",
        "system_wakeup",
        "inject-nmi",
        "cpu",
        "human-monitor-command",
        "getfd",
        "closefd",
        "add_client",
        "query-chardev",
    ];

    fn spec_commands() -> Vec<String> {
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../shared/spec/commands.json"
        );
        let text = std::fs::read_to_string(path)
            .unwrap_or_else(|e| panic!("the specification pack is missing: {path}: {e}"));
        let list: serde_json::Value = serde_json::from_str(&text).expect("commands.json is JSON");
        list.as_array()
            .expect("a list of commands")
            .iter()
            .map(|c| c["name"].as_str().expect("a name").to_string())
            .collect()
    }

    #[test]
    fn dispatched_commands_against_the_spec() {
        let cfg = match crate::cli::parse(["-kernel", "k", "-qmp", "stdio"].map(String::from)) {
            Ok(crate::cli::Action::Run(cfg)) => cfg,
            _ => panic!("test command line rejected"),
        };
        let (api, _rx) = crate::api::channel_pair().unwrap();
        let config = ServerConfig::default();
        let registry = registry(&cfg, api, StatusCell::new(RunStatus::Running), &config);
        let (_server, handle) = Server::new(registry, config).unwrap();
        let dispatched = handle.command_names();
        let spec = spec_commands();
        let in_spec = spec
            .iter()
            .filter(|c| dispatched.contains(&c.as_str()))
            .count();
        println!(
            "dispatched: {in_spec} of the spec's {} commands",
            spec.len()
        );
        for c in REQUIRED {
            assert!(dispatched.contains(c), "{c} is not dispatched");
        }
        // Everything dispatched is a command of the spec: nothing invented.
        for c in &dispatched {
            assert!(
                spec.iter().any(|s| s == c),
                "{c} is dispatched but not in the spec"
            );
        }
        assert_eq!(in_spec, dispatched.len());
    }
}
