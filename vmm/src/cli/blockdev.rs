//! `-blockdev`: a block node, in QEMU's keyval syntax (`driver=qcow2,node-name=d0,
//! file.driver=file,file.filename=/x`) or as JSON (`{"driver": "qcow2", ...}`), giving the
//! same QAPI `BlockdevOptions` that `blockdev-add` takes.

use petrel_qmp::schema::types::BlockdevOptions;
use serde_json::{Map, Value};

use super::error::ArgError;
use super::opts::{parse_bool, Opts, Syntax};

/// Members whose keyval strings are booleans.
const BOOL_KEYS: &[&str] = &[
    "read-only",
    "auto-read-only",
    "force-share",
    "direct",
    "no-flush",
    "lazy-refcounts",
    "pass-discard-request",
    "pass-discard-snapshot",
    "pass-discard-other",
    "drop-cache",
];

/// Members whose keyval strings are integers.
const INT_KEYS: &[&str] = &[
    "offset",
    "size",
    "cache-size",
    "l2-cache-size",
    "l2-cache-entry-size",
    "refcount-cache-size",
    "cache-clean-interval",
    "aio-max-batch",
];

/// Parses one `-blockdev` into the JSON of a checked `BlockdevOptions`.
pub(crate) fn parse_blockdev(arg: &str) -> Result<Value, ArgError> {
    let value = if arg.trim_start().starts_with('{') {
        serde_json::from_str(arg).map_err(|e| ArgError::InvalidBlockdev(e.to_string()))?
    } else {
        keyval_to_json(&Opts::parse(arg, None, Syntax::Keyval)?)?
    };
    let options: BlockdevOptions = serde_json::from_value(value.clone())
        .map_err(|e| ArgError::InvalidBlockdev(e.to_string()))?;
    if options.node_name.is_none() {
        return Err(ArgError::MissingParameter("node-name"));
    }
    Ok(value)
}

/// Turns dotted keys into nested objects, typing scalars by member name as QEMU's keyval
/// visitor types them by schema.
fn keyval_to_json(opts: &Opts) -> Result<Value, ArgError> {
    let mut root = Map::new();
    for (key, raw) in opts.iter() {
        let mut parts: Vec<&str> = key.split('.').collect();
        let leaf = parts.pop().unwrap_or_default();
        let mut node = &mut root;
        for part in parts {
            let entry = node
                .entry(part.to_string())
                .or_insert_with(|| Value::Object(Map::new()));
            node = match entry {
                Value::Object(m) => m,
                _ => {
                    return Err(ArgError::InvalidBlockdev(format!(
                        "Parameter '{part}' cannot be both a value and an object"
                    )))
                }
            };
        }
        let value = if BOOL_KEYS.contains(&leaf) {
            Value::Bool(parse_bool(key, raw)?)
        } else if INT_KEYS.contains(&leaf) {
            Value::from(
                raw.parse::<i64>()
                    .map_err(|_| ArgError::ExpectsNumber(key.to_string()))?,
            )
        } else if leaf == "backing" && (raw == "null" || raw.is_empty()) {
            Value::Null
        } else {
            Value::String(raw.to_string())
        };
        node.insert(leaf.to_string(), value);
    }
    Ok(Value::Object(root))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn keyval_nests_dotted_keys() {
        let v = parse_blockdev(
            "driver=qcow2,node-name=d0,file.driver=file,file.filename=/a,,b,read-only=on,\
             backing=null,cache.direct=off",
        )
        .unwrap();
        assert_eq!(
            v,
            json!({"driver": "qcow2", "node-name": "d0", "read-only": true, "backing": null,
                   "cache": {"direct": false},
                   "file": {"driver": "file", "filename": "/a,b"}})
        );
    }

    #[test]
    fn json_form_is_taken_as_is() {
        let arg = r#"{"driver":"raw","node-name":"r","file":"f0"}"#;
        assert_eq!(
            parse_blockdev(arg).unwrap(),
            json!({"driver": "raw", "node-name": "r", "file": "f0"})
        );
    }

    #[test]
    fn bad_blockdevs_are_refused() {
        assert_eq!(
            parse_blockdev("driver=file,filename=/x"),
            Err(ArgError::MissingParameter("node-name"))
        );
        assert!(matches!(
            parse_blockdev("driver=vmdk,node-name=x,file=f"),
            Err(ArgError::InvalidBlockdev(_))
        ));
        assert!(matches!(
            parse_blockdev("driver=raw,node-name=x"),
            Err(ArgError::InvalidBlockdev(_))
        ));
        assert!(matches!(
            parse_blockdev("driver=file,node-name=x,filename=/x,bogus=1"),
            Err(ArgError::InvalidBlockdev(_))
        ));
        assert_eq!(
            parse_blockdev("driver=file,node-name=x,filename=/x,read-only=maybe"),
            Err(ArgError::ExpectsBool("read-only".into()))
        );
        assert!(parse_blockdev("{not json").is_err());
    }
}
