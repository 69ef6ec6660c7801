//! `human-monitor-command`: the HMP commands management software still sends through QMP,
//! answered with QEMU's text.

use crate::api::net::NetRequest;
use crate::api::{CpuState, RunStatus, VmmAction};

/// What an HMP command line asks for.
#[derive(Debug, PartialEq, Eq)]
pub enum HmpCommand {
    /// Needs the VMM; the reply text is made from its answer.
    Vmm(VmmAction, HmpReply),
    /// Answered from static facts.
    Text(String),
}

/// How to turn the VMM's answer into text.
#[derive(Debug, PartialEq, Eq, Clone, Copy)]
pub enum HmpReply {
    /// No output.
    Silent,
    /// `info status`.
    Status,
    /// `info cpus`.
    Cpus,
    /// `info network`.
    Network,
}

/// Facts HMP prints without asking the VMM.
pub struct HmpFacts {
    /// `info version`.
    pub version: String,
    /// `info name`.
    pub name: Option<String>,
    /// `info uuid`.
    pub uuid: String,
    /// `info chardev` lines.
    pub chardevs: Vec<(String, String)>,
}

const HELP: &[(&str, &str)] = &[
    ("cont|c", "resume emulation"),
    ("help|? [cmd]", "show the help"),
    (
        "info [subcommand]",
        "show various information about the system state",
    ),
    ("quit|q", "quit the emulator"),
    ("stop|s", "stop emulation"),
    ("system_powerdown", "send system power down event"),
    ("system_reset", "reset the system"),
];

const INFO_HELP: &[(&str, &str)] = &[
    ("info chardev", "show the character devices"),
    ("info cpus", "show infos for each CPU"),
    ("info kvm", "show KVM information"),
    ("info name", "show the current VM name"),
    ("info network", "show the network state"),
    ("info status", "show the current VM status (running|paused)"),
    ("info uuid", "show the current VM UUID"),
    ("info version", "show the version of QEMU"),
];

fn help_text(rows: &[(&str, &str)]) -> String {
    rows.iter()
        .map(|(cmd, help)| format!("{cmd} -- {help}\r\n"))
        .collect()
}

/// Parses one HMP command line.
pub fn parse(line: &str, facts: &HmpFacts) -> HmpCommand {
    let words: Vec<&str> = line.split_whitespace().collect();
    let silent = |a| HmpCommand::Vmm(a, HmpReply::Silent);
    match words.as_slice() {
        [] => HmpCommand::Text(String::new()),
        ["stop" | "s"] => silent(VmmAction::Stop),
        ["cont" | "c"] => silent(VmmAction::Cont),
        ["system_reset"] => silent(VmmAction::SystemReset),
        ["system_powerdown"] => silent(VmmAction::SystemPowerdown),
        ["quit" | "q"] => silent(VmmAction::Quit),
        ["help" | "?"] => HmpCommand::Text(help_text(HELP)),
        ["help" | "?", "info"] | ["info"] => HmpCommand::Text(help_text(INFO_HELP)),
        ["help" | "?", cmd] => match HELP
            .iter()
            .find(|(c, _)| c.split(['|', ' ']).any(|n| n == *cmd))
        {
            Some(row) => HmpCommand::Text(help_text(&[*row])),
            None => HmpCommand::Text(format!("unknown command: '{cmd}'\r\n")),
        },
        ["info", "status"] => HmpCommand::Vmm(VmmAction::QueryStatus, HmpReply::Status),
        ["info", "cpus"] => HmpCommand::Vmm(VmmAction::QueryCpus, HmpReply::Cpus),
        ["info", "network"] => HmpCommand::Vmm(
            VmmAction::Net(Box::new(NetRequest::InfoNetwork)),
            HmpReply::Network,
        ),
        ["info", "version"] => HmpCommand::Text(format!("{}\r\n", facts.version)),
        ["info", "kvm"] => HmpCommand::Text("kvm support: enabled\r\n".into()),
        ["info", "name"] => HmpCommand::Text(
            facts
                .name
                .as_ref()
                .map(|n| format!("{n}\r\n"))
                .unwrap_or_default(),
        ),
        ["info", "uuid"] => HmpCommand::Text(format!("{}\r\n", facts.uuid)),
        ["info", "chardev"] => HmpCommand::Text(
            facts
                .chardevs
                .iter()
                .map(|(label, file)| format!("{label}: filename={file}\r\n"))
                .collect(),
        ),
        ["info", other, ..] => HmpCommand::Text(format!("unknown command: 'info {other}'\r\n")),
        [cmd, ..] => HmpCommand::Text(format!("unknown command: '{cmd}'\r\n")),
    }
}

/// QEMU's `info status` line.
pub fn status_text(status: RunStatus) -> String {
    match status {
        RunStatus::Running => "VM status: running\r\n".into(),
        RunStatus::Prelaunch => "VM status: paused (prelaunch)\r\n".into(),
        RunStatus::Paused => "VM status: paused\r\n".into(),
        other => format!("VM status: paused ({})\r\n", other.as_str()),
    }
}

/// QEMU's `info cpus` listing; `current` is the monitor's selected CPU.
pub fn cpus_text(cpus: &[CpuState], current: u32) -> String {
    cpus.iter()
        .map(|c| {
            let mark = if c.index == current { '*' } else { ' ' };
            format!("{mark} CPU #{}: thread_id={}\r\n", c.index, c.thread_id)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn facts() -> HmpFacts {
        HmpFacts {
            version: "7.2.0 (petrel-0.1.0)".into(),
            name: Some("vm1".into()),
            uuid: "00000000-0000-0000-0000-000000000000".into(),
            chardevs: vec![("serial0".into(), "stdio".into())],
        }
    }

    #[test]
    fn commands_map_to_actions_or_text() {
        let f = facts();
        assert_eq!(
            parse("stop", &f),
            HmpCommand::Vmm(VmmAction::Stop, HmpReply::Silent)
        );
        assert_eq!(
            parse("  c ", &f),
            HmpCommand::Vmm(VmmAction::Cont, HmpReply::Silent)
        );
        assert_eq!(
            parse("info status", &f),
            HmpCommand::Vmm(VmmAction::QueryStatus, HmpReply::Status)
        );
        assert_eq!(
            parse("info kvm", &f),
            HmpCommand::Text("kvm support: enabled\r\n".into())
        );
        assert_eq!(parse("info name", &f), HmpCommand::Text("vm1\r\n".into()));
        assert_eq!(
            parse("info chardev", &f),
            HmpCommand::Text("serial0: filename=stdio\r\n".into())
        );
        assert_eq!(
            parse("frob", &f),
            HmpCommand::Text("unknown command: 'frob'\r\n".into())
        );
        let HmpCommand::Text(help) = parse("help", &f) else {
            panic!()
        };
        assert!(help.contains("system_powerdown -- send system power down event\r\n"));
    }

    #[test]
    fn status_and_cpus_text() {
        assert_eq!(
            status_text(RunStatus::Prelaunch),
            "VM status: paused (prelaunch)\r\n"
        );
        assert_eq!(
            status_text(RunStatus::Shutdown),
            "VM status: paused (shutdown)\r\n"
        );
        let cpus = [
            CpuState {
                index: 0,
                thread_id: 10,
                pc: 0,
                halted: false,
            },
            CpuState {
                index: 1,
                thread_id: 11,
                pc: 0,
                halted: true,
            },
        ];
        assert_eq!(
            cpus_text(&cpus, 0),
            "* CPU #0: thread_id=10\r\n  CPU #1: thread_id=11\r\n"
        );
    }
}
