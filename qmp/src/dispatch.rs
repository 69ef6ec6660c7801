//! The command registry: which commands exist for clients, and the handler behind each.
//!
//! Arguments are checked against the schema (unknown, missing, wrong type) before a handler
//! runs, so handlers only see well-typed arguments and a bad call has no side effect. A handler
//! answers through a [`Responder`], now or later and from any thread: a command that waits on
//! the VMM does not hold up the monitor's other work.

use std::collections::BTreeMap;
use std::marker::PhantomData;
use std::os::fd::OwnedFd;
use std::sync::{Arc, Mutex};

use serde::Serialize;
use serde_json::{Map, Value};

use crate::error::QmpError;
use crate::schema::{validate, Command};

/// File descriptors a monitor holds by name (`getfd`/`closefd`).
pub type FdStore = Arc<Mutex<BTreeMap<String, OwnedFd>>>;

/// Who is calling, and what came with the call.
pub struct CallContext {
    /// The monitor's id, unique for the life of the process.
    pub monitor: u64,
    /// The monitor's named file descriptors.
    pub fds: FdStore,
    /// Descriptors passed with this message (SCM_RIGHTS), in order.
    pub received_fds: Vec<OwnedFd>,
    /// Whether the command was sent with `exec-oob`.
    pub oob: bool,
}

/// Delivers one reply.
type SendFn = Box<dyn FnOnce(Result<Value, QmpError>) + Send>;

/// The reply channel of one call. Dropping it unanswered sends a GenericError, so a client
/// never waits forever.
pub struct Responder {
    send: Option<SendFn>,
}

impl Responder {
    /// Wraps the function that delivers the reply.
    pub fn new(send: impl FnOnce(Result<Value, QmpError>) + Send + 'static) -> Responder {
        Responder {
            send: Some(Box::new(send)),
        }
    }

    /// Sends a reply.
    pub fn reply(mut self, result: Result<Value, QmpError>) {
        if let Some(send) = self.send.take() {
            send(result);
        }
    }
}

impl Drop for Responder {
    fn drop(&mut self) {
        if let Some(send) = self.send.take() {
            send(Err(QmpError::generic(
                "the command was dropped without a reply",
            )));
        }
    }
}

/// A [`Responder`] that only accepts the command's return type.
pub struct Reply<T> {
    inner: Responder,
    _ret: PhantomData<fn(T)>,
}

impl<T: Serialize> Reply<T> {
    /// Success.
    pub fn ok(self, value: T) {
        let v = serde_json::to_value(value)
            .map_err(|e| QmpError::generic(format!("cannot encode the reply: {e}")));
        self.inner.reply(v);
    }

    /// Failure.
    pub fn err(self, e: QmpError) {
        self.inner.reply(Err(e));
    }

    /// Success or failure.
    pub fn send(self, r: Result<T, QmpError>) {
        match r {
            Ok(v) => self.ok(v),
            Err(e) => self.err(e),
        }
    }

    /// The untyped responder, to hand to another thread that produces JSON itself.
    pub fn into_inner(self) -> Responder {
        self.inner
    }
}

type Handler = Box<dyn Fn(CallContext, Value, Responder) + Send + Sync>;

struct Entry {
    handler: Handler,
    allow_oob: bool,
}

/// Registered commands.
#[derive(Default)]
pub struct Registry {
    entries: BTreeMap<&'static str, Entry>,
}

impl Registry {
    /// An empty registry.
    pub fn new() -> Registry {
        Registry::default()
    }

    /// Registers the handler of command `C`. A second registration replaces the first.
    pub fn register<C, F>(&mut self, handler: F)
    where
        C: Command,
        F: Fn(CallContext, C::Args, Reply<C::Returns>) + Send + Sync + 'static,
    {
        let wrapped = move |ctx: CallContext, args: Value, responder: Responder| {
            // The arguments were validated against the schema, so this only fails if the
            // schema and the generated type disagree: a bug, reported to the client.
            match serde_json::from_value::<C::Args>(args) {
                Ok(a) => handler(
                    ctx,
                    a,
                    Reply {
                        inner: responder,
                        _ret: PhantomData,
                    },
                ),
                Err(e) => responder.reply(Err(QmpError::generic(format!(
                    "internal error decoding arguments of {}: {e}",
                    C::NAME
                )))),
            }
        };
        self.entries.insert(
            C::NAME,
            Entry {
                handler: Box::new(wrapped),
                allow_oob: C::ALLOW_OOB,
            },
        );
    }

    /// Whether `name` is registered.
    pub fn contains(&self, name: &str) -> bool {
        self.entries.contains_key(name)
    }

    /// Whether `name` may run out of band.
    pub fn allows_oob(&self, name: &str) -> bool {
        self.entries.get(name).is_some_and(|e| e.allow_oob)
    }

    /// Registered command names, sorted.
    pub fn names(&self) -> Vec<&'static str> {
        self.entries.keys().copied().collect()
    }

    /// Runs `name` with `args` (absent arguments are an empty object). Unknown commands and
    /// bad arguments are answered here without calling any handler.
    pub fn dispatch(
        &self,
        ctx: CallContext,
        name: &str,
        args: Option<Map<String, Value>>,
        responder: Responder,
    ) {
        let Some(entry) = self.entries.get(name) else {
            return responder.reply(Err(QmpError::command_not_found(name)));
        };
        let args = args.unwrap_or_default();
        if let Err(e) = validate::validate_arguments(name, &args) {
            return responder.reply(Err(e));
        }
        (entry.handler)(ctx, Value::Object(args), responder);
    }
}
