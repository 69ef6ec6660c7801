//! The `key=value,key=value` syntax of QEMU option arguments.
//!
//! QEMU has two parsers for it: QemuOpts (`-m`, `-name`, `-chardev`, `-accel`, the options of
//! `-serial unix:`) and keyval (`-machine`, `-smp`, `-display`). Both split on `,`, read `,,`
//! inside a value as a literal comma, and let the first element omit its key when the option
//! has an "implied" one (`-m 512M` is `-m size=512M`). They differ on bare words after the
//! first element: QemuOpts reads `server` as `server=on` and `nowait` as `wait=off` (a legacy
//! form QEMU 7.2 still accepts), keyval rejects them.

use super::config::ListTopic;
use super::error::ArgError;

/// An option argument's meaning: a value, or a request for one of the help lists.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Parsed<T> {
    /// The option's value.
    Value(T),
    /// `help` or `?` asked for this list.
    List(ListTopic),
}

/// Which of QEMU's two parsers an option uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Syntax {
    /// Bare `flag` means `flag=on`, bare `noflag` means `flag=off`.
    QemuOpts,
    /// Every element but an implied first one needs `=`.
    Keyval,
}

/// The parsed elements of one option argument, in order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Opts {
    params: Vec<(String, String)>,
}

impl Opts {
    /// Splits `arg` into `key=value` pairs; a first element without `=` is the value of
    /// `implied`, if the option has an implied key.
    ///
    /// A bare `help` or `?` is kept as key `help` in either syntax, since both of QEMU's
    /// parsers treat it as a request for help rather than as a flag.
    pub fn parse(arg: &str, implied: Option<&str>, syntax: Syntax) -> Result<Opts, ArgError> {
        let mut params = Vec::new();
        let mut rest = arg;
        let mut first = true;
        while !rest.is_empty() {
            let name_len = rest.find(['=', ',']).unwrap_or(rest.len());
            if rest[name_len..].starts_with('=') {
                let (value, after) = read_value(&rest[name_len + 1..]);
                params.push((rest[..name_len].to_owned(), value));
                rest = after;
            } else if let Some(key) = implied.filter(|_| first) {
                let (value, after) = read_value(rest);
                params.push((key.to_owned(), value));
                rest = after;
            } else {
                let name = &rest[..name_len];
                // The name ends at a comma (skipped) or at the end of the argument.
                rest = rest[name_len..].strip_prefix(',').unwrap_or("");
                params.push(flag(name, syntax)?);
            }
            first = false;
        }
        Ok(Opts { params })
    }

    /// Adds `key=value` after the others.
    pub fn push(&mut self, key: &str, value: &str) {
        self.params.push((key.to_owned(), value.to_owned()));
    }

    /// Fails on the first key that is not in `known`.
    pub fn check_known(&self, known: &[&str]) -> Result<(), ArgError> {
        match self
            .params
            .iter()
            .find(|(k, _)| !known.contains(&k.as_str()))
        {
            Some((key, _)) => Err(ArgError::UnknownParameter(key.clone())),
            None => Ok(()),
        }
    }

    /// The value of `key`; when repeated, the last one wins as in QemuOpts.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.params
            .iter()
            .rev()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// Whether the argument asked for help (`help` or `?` as a bare word).
    pub fn wants_help(&self) -> bool {
        self.get("help").is_some()
    }

    /// The boolean value of `key`, if present.
    pub fn get_bool(&self, key: &str) -> Result<Option<bool>, ArgError> {
        self.get(key).map(|v| parse_bool(key, v)).transpose()
    }

    /// All pairs in order, for options whose keys are applied one by one.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.params.iter().map(|(k, v)| (k.as_str(), v.as_str()))
    }

    /// Rewrites `_` to `-` in every key, as QEMU does for `-machine` (`kernel_irqchip`).
    pub fn dashify_keys(&mut self) {
        for (key, _) in &mut self.params {
            *key = key.replace('_', "-");
        }
    }
}

/// A bare word: help, or a QemuOpts flag.
fn flag(name: &str, syntax: Syntax) -> Result<(String, String), ArgError> {
    if is_help(name) {
        return Ok(("help".to_owned(), "on".to_owned()));
    }
    match syntax {
        Syntax::Keyval => Err(ArgError::ExpectedEquals(name.to_owned())),
        Syntax::QemuOpts => Ok(match name.strip_prefix("no") {
            Some(negated) => (negated.to_owned(), "off".to_owned()),
            None => (name.to_owned(), "on".to_owned()),
        }),
    }
}

/// Reads a value up to the first single comma, turning `,,` into `,`; returns it and what
/// follows the separating comma.
fn read_value(s: &str) -> (String, &str) {
    let mut value = String::new();
    let mut rest = s;
    loop {
        match rest.find(',') {
            None => {
                value.push_str(rest);
                return (value, "");
            }
            Some(i) if rest[i + 1..].starts_with(',') => {
                value.push_str(&rest[..=i]);
                rest = &rest[i + 2..];
            }
            Some(i) => {
                value.push_str(&rest[..i]);
                return (value, &rest[i + 1..]);
            }
        }
    }
}

/// QEMU's `is_help_option`.
pub(crate) fn is_help(s: &str) -> bool {
    s == "help" || s == "?"
}

/// A QEMU boolean: on/yes/true/y or off/no/false/n, case-sensitive like QEMU.
pub(crate) fn parse_bool(key: &str, value: &str) -> Result<bool, ArgError> {
    match value {
        "on" | "yes" | "true" | "y" => Ok(true),
        "off" | "no" | "false" | "n" => Ok(false),
        _ => Err(ArgError::ExpectsBool(key.to_owned())),
    }
}

/// A non-negative decimal integer that fits in `u32`.
///
/// QEMU also takes hex and octal here (it parses with base 0); petrel accepts decimal only,
/// so that `010` cannot silently mean 8.
pub(crate) fn parse_u32(key: &str, value: &str) -> Result<u32, ArgError> {
    if value.is_empty() || !value.bytes().all(|b| b.is_ascii_digit()) {
        return Err(ArgError::ExpectsNumber(key.to_owned()));
    }
    value
        .parse()
        .map_err(|_| ArgError::ExpectsNumber(key.to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pairs(arg: &str, implied: Option<&str>, syntax: Syntax) -> Vec<(String, String)> {
        Opts::parse(arg, implied, syntax).unwrap().params
    }

    fn p(k: &str, v: &str) -> (String, String) {
        (k.to_owned(), v.to_owned())
    }

    #[test]
    fn key_value_pairs() {
        assert_eq!(
            pairs("a=1,b=two", None, Syntax::QemuOpts),
            vec![p("a", "1"), p("b", "two")]
        );
    }

    #[test]
    fn implied_key_only_for_a_first_element_without_equals() {
        assert_eq!(
            pairs("512M,slots=2", Some("size"), Syntax::QemuOpts),
            vec![p("size", "512M"), p("slots", "2")]
        );
        assert_eq!(
            pairs("size=1G", Some("size"), Syntax::QemuOpts),
            vec![p("size", "1G")]
        );
        assert_eq!(
            pairs("slots=2,3", Some("size"), Syntax::QemuOpts),
            vec![p("slots", "2"), p("3", "on")]
        );
    }

    #[test]
    fn double_comma_escapes_a_comma() {
        assert_eq!(
            pairs("path=/a,,b,server=on", None, Syntax::QemuOpts),
            vec![p("path", "/a,b"), p("server", "on")]
        );
        assert_eq!(
            pairs("/a,,b,,,server", Some("path"), Syntax::QemuOpts),
            vec![p("path", "/a,b,"), p("server", "on")]
        );
        assert_eq!(pairs("x=,,,,", None, Syntax::QemuOpts), vec![p("x", ",,")]);
    }

    #[test]
    fn flags_in_qemuopts() {
        assert_eq!(
            pairs("/s,server,nowait", Some("path"), Syntax::QemuOpts),
            vec![p("path", "/s"), p("server", "on"), p("wait", "off")]
        );
    }

    #[test]
    fn flags_rejected_in_keyval() {
        assert_eq!(
            Opts::parse("q35,usb", Some("type"), Syntax::Keyval),
            Err(ArgError::ExpectedEquals("usb".into()))
        );
    }

    #[test]
    fn help_in_both_syntaxes() {
        assert!(Opts::parse("q35,help", Some("type"), Syntax::Keyval)
            .unwrap()
            .wants_help());
        assert!(Opts::parse("x=1,?", None, Syntax::QemuOpts)
            .unwrap()
            .wants_help());
    }

    #[test]
    fn trailing_comma_and_empty_argument() {
        assert_eq!(
            pairs("512M,", Some("size"), Syntax::QemuOpts),
            vec![p("size", "512M")]
        );
        assert!(pairs("", Some("size"), Syntax::QemuOpts).is_empty());
    }

    #[test]
    fn empty_keys_are_kept_for_the_caller_to_reject() {
        let opts = Opts::parse("=5", None, Syntax::Keyval).unwrap();
        assert_eq!(
            opts.check_known(&["a"]),
            Err(ArgError::UnknownParameter(String::new()))
        );
    }

    #[test]
    fn last_value_wins() {
        let opts = Opts::parse("a=1,a=2", None, Syntax::Keyval).unwrap();
        assert_eq!(opts.get("a"), Some("2"));
    }

    #[test]
    fn unknown_key() {
        let opts = Opts::parse("a=1,b=2", None, Syntax::Keyval).unwrap();
        assert_eq!(
            opts.check_known(&["a"]),
            Err(ArgError::UnknownParameter("b".into()))
        );
    }

    #[test]
    fn booleans() {
        for v in ["on", "yes", "true", "y"] {
            assert_eq!(parse_bool("k", v), Ok(true));
        }
        for v in ["off", "no", "false", "n"] {
            assert_eq!(parse_bool("k", v), Ok(false));
        }
        for v in ["ON", "1", "", "maybe"] {
            assert_eq!(parse_bool("k", v), Err(ArgError::ExpectsBool("k".into())));
        }
    }

    #[test]
    fn numbers() {
        assert_eq!(parse_u32("n", "42"), Ok(42));
        assert_eq!(parse_u32("n", "4294967295"), Ok(u32::MAX));
        for v in ["", "-1", "+1", "0x10", "4294967296", "1.5", " 1"] {
            assert_eq!(parse_u32("n", v), Err(ArgError::ExpectsNumber("n".into())));
        }
    }

    #[test]
    fn dashify() {
        let mut opts = Opts::parse("kernel_irqchip=on", None, Syntax::Keyval).unwrap();
        opts.dashify_keys();
        assert_eq!(opts.get("kernel-irqchip"), Some("on"));
    }

    #[test]
    fn non_ascii_does_not_break_splitting() {
        assert_eq!(
            pairs("é=ü,,ß,ñ", None, Syntax::QemuOpts),
            vec![p("é", "ü,ß"), p("ñ", "on")]
        );
    }
}
