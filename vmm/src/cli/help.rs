//! The texts petrel prints instead of running: `-help`, `-version` and the `help` lists.
//!
//! Every text ends with a newline, so it is printed with `print!`.

use std::fmt::Write;

use super::config::ListTopic;
use super::options::OPTIONS;

/// Where QEMU's help puts the description when the option fits before it.
const DESCRIPTION_COLUMN: usize = 16;

/// `-version`.
pub fn version_text() -> String {
    format!(
        "petrel version {}\nQEMU-compatible command line and QMP\n",
        env!("CARGO_PKG_VERSION")
    )
}

/// `-help`: a usage line, then every option with its syntax and a line of description,
/// laid out like QEMU's.
pub fn help_text() -> String {
    let mut text = format!(
        "petrel version {}\nusage: petrel [options]\n",
        env!("CARGO_PKG_VERSION")
    );
    let mut section = "";
    for spec in OPTIONS {
        if spec.section != section {
            section = spec.section;
            let _ = write!(text, "\n{section}:\n");
        }
        let names: Vec<String> = spec.names.iter().map(|n| format!("-{n}")).collect();
        let mut usage = names.join(" or ");
        if let Some(arg) = spec.arg {
            usage.push(' ');
            usage.push_str(arg);
        }
        let mut lines = spec.help.lines();
        let first = lines.next().unwrap_or("");
        if usage.len() < DESCRIPTION_COLUMN {
            let _ = writeln!(text, "{usage:<DESCRIPTION_COLUMN$}{first}");
        } else {
            let _ = writeln!(text, "{usage}\n{:DESCRIPTION_COLUMN$}{first}", "");
        }
        for line in lines {
            let _ = writeln!(text, "{:DESCRIPTION_COLUMN$}{line}", "");
        }
    }
    text.push_str("\nOptions of qemu-system-x86_64 not listed here are not supported.\n");
    text
}

/// The text a `help` value asks for.
pub fn list_text(topic: ListTopic) -> String {
    match topic {
        ListTopic::Machines => "Supported machines are:\n\
             q35                  Standard PC (Q35 + ICH9, 2009) (default)\n\
             pc-q35-X.Y           Standard PC (Q35 + ICH9, 2009), any version from 2.4\n\
             pc                   Standard PC (i440FX + PIIX, 1996)\n\
             pc-i440fx-X.Y        Standard PC (i440FX + PIIX, 1996), any version from 1.4\n"
            .to_owned(),
        ListTopic::MachineProperties => "Machine properties:\n\
             \x20 accel=kvm[:...]          accelerator list; must include kvm\n\
             \x20 kernel-irqchip=on        in-kernel irqchip (the only mode)\n\
             \x20 dump-guest-core=on|off   include guest memory in a core dump (default on)\n\
             \x20 mem-merge=on|off         allow KSM to merge guest memory (default on)\n\
             \x20 usb=off                  no USB controller (the only mode)\n\
             \x20 vmport=off|auto          no VMware I/O port (the only mode)\n\
             \x20 smm=off|auto             no System Management Mode (the only mode)\n\
             \x20 graphics=off             no graphics (the only mode)\n"
            .to_owned(),
        ListTopic::Cpus => "Available CPUs:\n\
             x86             host  processor with all supported host features\n\
             x86              max  same as host under KVM\n"
            .to_owned(),
        ListTopic::Accelerators => "Accelerators supported in petrel:\nkvm\n".to_owned(),
        ListTopic::Displays => "Available display backend types:\nnone\n".to_owned(),
        ListTopic::ChardevBackends => {
            "Available chardev backend types: \n  file\n  null\n  socket\n  stdio\n".to_owned()
        }
        ListTopic::Devices => {
            let mut text = String::from("Storage devices:\n");
            for (name, bus, desc) in super::device::DEVICE_MODELS {
                text.push_str(&format!("name \"{name}\", bus {bus}, desc \"{desc}\"\n"));
            }
            text
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn version() {
        let text = version_text();
        assert_eq!(
            text,
            format!(
                "petrel version {}\nQEMU-compatible command line and QMP\n",
                env!("CARGO_PKG_VERSION")
            )
        );
    }

    #[test]
    fn help_lists_every_option_name() {
        let text = help_text();
        assert!(text.contains("usage: petrel [options]"));
        for spec in OPTIONS {
            for name in spec.names {
                let shown = text.lines().any(|line| {
                    line.split([' ', '\t'])
                        .any(|word| word.trim_end_matches(',') == format!("-{name}"))
                });
                assert!(shown, "-{name} missing from help");
            }
            for line in spec.help.lines() {
                assert!(text.contains(&format!(" {line}\n")), "{line}");
            }
        }
    }

    #[test]
    fn help_layout() {
        let text = help_text();
        assert!(text.contains("\n-h or -help     display this help and exit\n"));
        assert!(text.contains("\n-m [size=]N[,slots=n,maxmem=size]\n                set the RAM"));
        assert!(text.ends_with('\n'));
        // Every line fits a terminal, as QEMU's help does.
        for line in text.lines() {
            assert!(line.len() <= 80, "too long: {line}");
        }
    }

    #[test]
    fn every_text_ends_with_a_newline() {
        for topic in [
            ListTopic::Machines,
            ListTopic::MachineProperties,
            ListTopic::Cpus,
            ListTopic::Accelerators,
            ListTopic::Displays,
            ListTopic::ChardevBackends,
            ListTopic::Devices,
        ] {
            assert!(list_text(topic).ends_with('\n'));
        }
    }
}
