//! HMP's user networking commands, `hostfwd_add`, `hostfwd_remove` and `info usernet`,
//! answered with QEMU 7.2's texts. Like QEMU's, they print their errors: the text is the
//! whole answer either way.

use petrel_net::UserControl;

use super::NetLayer;

impl NetLayer {
    /// QEMU's `slirp_lookup`: the user netdev `id` names, or without one the first user
    /// netdev; otherwise the text QEMU prints instead.
    fn user_netdev(&self, id: Option<&str>) -> Result<&UserControl, String> {
        let Some(id) = id else {
            return self
                .netdevs
                .iter()
                .find_map(|n| n.user.as_ref())
                .ok_or_else(|| "user mode network stack not in use\r\n".to_owned());
        };
        let netdev = self
            .netdevs
            .iter()
            .find(|n| n.id == id)
            .ok_or_else(|| format!("unrecognized netdev id '{id}'\r\n"))?;
        netdev
            .user
            .as_ref()
            .ok_or_else(|| "invalid device specified\r\n".to_owned())
    }

    /// HMP `hostfwd_add [netdev_id] rule`: nothing once the rule is in place.
    pub(super) fn hostfwd_add(&self, id: Option<&str>, rule: &str) -> String {
        let outcome = self
            .user_netdev(id)
            .and_then(|user| user.hostfwd_add(rule).map_err(|e| format!("{e}\r\n")));
        outcome.err().unwrap_or_default()
    }

    /// HMP `hostfwd_remove [netdev_id] [tcp|udp]:[hostaddr]:hostport`.
    pub(super) fn hostfwd_remove(&self, id: Option<&str>, rule: &str) -> String {
        let user = match self.user_netdev(id) {
            Ok(user) => user,
            Err(text) => return text,
        };
        match user.hostfwd_remove(rule) {
            Ok(true) => format!("host forwarding rule for {rule} removed\r\n"),
            Ok(false) => format!("host forwarding rule for {rule} not found\r\n"),
            Err(e) => format!("{e}\r\n"),
        }
    }

    /// HMP `info usernet`: each user netdev's connection table, in creation order. A
    /// netdev is on no hub, which QEMU numbers -1.
    pub(super) fn info_usernet(&self) -> String {
        let mut text = String::new();
        for netdev in &self.netdevs {
            let Some(user) = &netdev.user else {
                continue;
            };
            let table = user.connection_info().unwrap_or_else(|e| format!("{e}\n"));
            text.push_str(&format!("Hub -1 ({}):\r\n", netdev.id));
            text.push_str(&table.replace('\n', "\r\n"));
        }
        text
    }
}
