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
    /// The network layer's text: `info network`, `info usernet`, `hostfwd_add`,
    /// `hostfwd_remove`.
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
        "hostfwd_add [netdev_id] [tcp|udp]:[hostaddr]:hostport-[guestaddr]:guestport",
        "redirect TCP or UDP connections from host to guest (requires -net user)",
    ),
    (
        "hostfwd_remove [netdev_id] [tcp|udp]:[hostaddr]:hostport",
        "remove host-to-guest TCP or UDP redirection",
    ),
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
    ("info usernet", "show user network stack connection states"),
    ("info uuid", "show the current VM UUID"),
    ("info version", "show the version of QEMU"),
];

fn help_text(rows: &[(&str, &str)]) -> String {
    rows.iter()
        .map(|(cmd, help)| format!("{cmd} -- {help}\r\n"))
        .collect()
}

/// QEMU's answer to arguments that do not fit `cmd` (`info X` is `X`), e.g.
/// "string expected".
fn usage(cmd: &str, what: &str) -> HmpCommand {
    let name = cmd.strip_prefix("info ").unwrap_or(cmd);
    HmpCommand::Text(format!(
        "{name}: {what}\r\nTry \"help {cmd}\" for more information\r\n"
    ))
}

/// One string argument from the start of `rest`, as QEMU's monitor reads it: a word, or
/// a double-quoted string with `\n`, `\r`, `\\`, `\'` and `\"` escapes; `Ok(None)` when no
/// argument is left, `Err(())` for a quoted string that does not end well.
fn string_arg(rest: &mut &str) -> Result<Option<String>, ()> {
    let text = rest.trim_start();
    if text.is_empty() {
        *rest = text;
        return Ok(None);
    }
    let Some(quoted) = text.strip_prefix('"') else {
        let end = text.find(char::is_whitespace).unwrap_or(text.len());
        *rest = &text[end..];
        return Ok(Some(text[..end].to_owned()));
    };
    let mut out = String::new();
    let mut chars = quoted.char_indices();
    while let Some((i, c)) = chars.next() {
        match c {
            '"' => {
                *rest = &quoted[i + 1..];
                return Ok(Some(out));
            }
            '\\' => out.push(match chars.next().ok_or(())?.1 {
                'n' => '\n',
                'r' => '\r',
                c @ ('\\' | '\'' | '"') => c,
                _ => return Err(()),
            }),
            c => out.push(c),
        }
    }
    Err(())
}

/// `hostfwd_add` and `hostfwd_remove`, whose arguments are a rule or a netdev id and a
/// rule (QEMU's `arg1:s,arg2:s?`).
fn hostfwd(cmd: &str, mut args: &str) -> HmpCommand {
    let (first, second) = match (string_arg(&mut args), string_arg(&mut args)) {
        (Ok(Some(first)), Ok(second)) => (first, second),
        _ => return usage(cmd, "string expected"),
    };
    if !args.trim_start().is_empty() {
        return usage(cmd, "extraneous characters at the end of line");
    }
    let (netdev, rule) = match second {
        Some(rule) => (Some(first), rule),
        None => (None, first),
    };
    let req = if cmd == "hostfwd_add" {
        NetRequest::HostfwdAdd { netdev, rule }
    } else {
        NetRequest::HostfwdRemove { netdev, rule }
    };
    HmpCommand::Vmm(VmmAction::Net(Box::new(req)), HmpReply::Network)
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
        [cmd @ ("hostfwd_add" | "hostfwd_remove"), ..] => {
            let args = line.trim_start().strip_prefix(cmd).unwrap_or_default();
            hostfwd(cmd, args)
        }
        ["info", "usernet"] => HmpCommand::Vmm(
            VmmAction::Net(Box::new(NetRequest::InfoUsernet)),
            HmpReply::Network,
        ),
        ["info", "usernet", ..] => {
            usage("info usernet", "extraneous characters at the end of line")
        }
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

    fn net(req: NetRequest) -> HmpCommand {
        HmpCommand::Vmm(VmmAction::Net(Box::new(req)), HmpReply::Network)
    }

    #[test]
    fn user_networking_commands_read_their_arguments_as_qemu() {
        let f = facts();
        let add = |netdev: Option<&str>, rule: &str| {
            net(NetRequest::HostfwdAdd {
                netdev: netdev.map(str::to_owned),
                rule: rule.to_owned(),
            })
        };
        assert_eq!(
            parse("hostfwd_add tcp::5555-:22", &f),
            add(None, "tcp::5555-:22")
        );
        assert_eq!(
            parse("  hostfwd_add  n0   tcp::5555-:22 ", &f),
            add(Some("n0"), "tcp::5555-:22")
        );
        assert_eq!(
            parse(r#"hostfwd_add "n0" "tcp::5555-:22""#, &f),
            add(Some("n0"), "tcp::5555-:22")
        );
        assert_eq!(
            parse(r#"hostfwd_remove "tcp::55\"55"x"#, &f),
            net(NetRequest::HostfwdRemove {
                netdev: Some(r#"tcp::55"55"#.into()),
                rule: "x".into(),
            })
        );
        let usage = |cmd: &str, what: &str| {
            HmpCommand::Text(format!(
                "{cmd}: {what}\r\nTry \"help {cmd}\" for more information\r\n"
            ))
        };
        assert_eq!(
            parse("hostfwd_add", &f),
            usage("hostfwd_add", "string expected")
        );
        assert_eq!(
            parse(r#"hostfwd_remove "tcp::5555"#, &f),
            usage("hostfwd_remove", "string expected")
        );
        assert_eq!(
            parse(r#"hostfwd_add "tcp::55\05-:22""#, &f),
            usage("hostfwd_add", "string expected")
        );
        assert_eq!(
            parse("hostfwd_add a b c", &f),
            usage("hostfwd_add", "extraneous characters at the end of line")
        );
        assert_eq!(parse("info usernet", &f), net(NetRequest::InfoUsernet));
        assert_eq!(
            parse("info usernet x", &f),
            HmpCommand::Text(
                "usernet: extraneous characters at the end of line\r\n\
                 Try \"help info usernet\" for more information\r\n"
                    .into()
            )
        );
        assert_eq!(
            parse("help hostfwd_remove", &f),
            HmpCommand::Text(
                "hostfwd_remove [netdev_id] [tcp|udp]:[hostaddr]:hostport -- \
                 remove host-to-guest TCP or UDP redirection\r\n"
                    .into()
            )
        );
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
