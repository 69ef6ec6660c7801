//! CPU topology: how vCPU indexes map to sockets, dies, cores, threads and APIC IDs.

/// The guest's CPU topology, as given by `-smp`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Topology {
    /// Sockets.
    pub sockets: u32,
    /// Dies per socket.
    pub dies: u32,
    /// Cores per die.
    pub cores: u32,
    /// Threads per core.
    pub threads: u32,
}

/// Bits needed to hold `count - 1`, as the APIC ID encoding uses.
fn field_width(count: u32) -> u32 {
    if count <= 1 {
        0
    } else {
        32 - (count - 1).leading_zeros()
    }
}

impl Topology {
    /// Width of the thread field in the APIC ID.
    pub fn thread_bits(&self) -> u32 {
        field_width(self.threads)
    }

    /// Width of the core field in the APIC ID.
    pub fn core_bits(&self) -> u32 {
        field_width(self.cores)
    }

    /// Width of the die field in the APIC ID.
    pub fn die_bits(&self) -> u32 {
        field_width(self.dies)
    }

    /// Logical processors in one package.
    pub fn threads_per_package(&self) -> u32 {
        self.dies * self.cores * self.threads
    }

    /// Logical processors in one die.
    pub fn threads_per_die(&self) -> u32 {
        self.cores * self.threads
    }

    /// The APIC ID of the vCPU with index `index`.
    pub fn apic_id(&self, index: u32) -> u32 {
        let thread = index % self.threads;
        let core = (index / self.threads) % self.cores;
        let die = (index / (self.threads * self.cores)) % self.dies;
        let socket = index / self.threads_per_package();
        let core_shift = self.thread_bits();
        let die_shift = core_shift + self.core_bits();
        let socket_shift = die_shift + self.die_bits();
        (socket << socket_shift) | (die << die_shift) | (core << core_shift) | thread
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn apic_ids_leave_gaps_for_non_power_of_two_counts() {
        let t = Topology {
            sockets: 2,
            dies: 1,
            cores: 3,
            threads: 2,
        };
        let ids: Vec<u32> = (0..12).map(|i| t.apic_id(i)).collect();
        assert_eq!(ids, vec![0, 1, 2, 3, 4, 5, 8, 9, 10, 11, 12, 13]);
    }

    #[test]
    fn sockets_only_is_dense() {
        let t = Topology {
            sockets: 8,
            dies: 1,
            cores: 1,
            threads: 1,
        };
        assert_eq!(
            (0..8).map(|i| t.apic_id(i)).collect::<Vec<_>>(),
            (0..8).collect::<Vec<_>>()
        );
    }
}
