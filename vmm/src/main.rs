//! The petrel binary: a KVM virtual machine monitor with a QEMU-compatible command line.

mod api;
mod balloon;
mod blockdev;
mod chardev;
mod cli;
mod dump;
mod event_loop;
mod frontend;
mod logger;
mod machine;
mod netdev;
mod process;
mod vm;

use std::time::Instant;

/// Formats an error and its causes as `petrel: outer: cause: root cause`.
pub(crate) fn error_chain(e: &dyn std::error::Error) -> String {
    format!("petrel: {}", error_text(e))
}

/// Formats an error and its causes as `outer: cause: root cause`.
pub(crate) fn error_text(e: &dyn std::error::Error) -> String {
    let mut msg = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        msg.push_str(&format!(": {s}"));
        source = s.source();
    }
    msg
}

fn main() {
    let start = Instant::now();
    logger::init();
    let action = match cli::parse(std::env::args().skip(1)) {
        Ok(a) => a,
        Err(e) => {
            eprintln!("{}", error_chain(&e));
            std::process::exit(1);
        }
    };
    let code = match action {
        cli::Action::Help => {
            print!("{}", cli::help_text());
            0
        }
        cli::Action::Version => {
            print!("{}", cli::version_text());
            0
        }
        cli::Action::List(topic) => {
            print!("{}", cli::list_text(topic));
            0
        }
        cli::Action::Run(cfg) => match machine::run(*cfg, start) {
            Ok(code) => code,
            Err(e) => {
                eprintln!("{}", error_chain(&e));
                1
            }
        },
    };
    std::process::exit(code);
}
