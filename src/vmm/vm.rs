//! A microVM from a [`VmConfig`]: KVM VM with in-kernel irqchip and PIT, lazily backed RAM,
//! COM1, the i8042 reset line, a virtio-vsock device over mmio, the kernel loaded through
//! its PVH entry, one thread per vCPU and the device event loop. [`MicroVm::wait_stop`]
//! says how the guest ended; [`MicroVm::shutdown`] stops everything and joins the threads.

use std::fs::File;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, channel};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use kvm_bindings::{KVM_PIT_SPEAKER_DUMMY, kvm_pit_config, kvm_userspace_memory_region};
use kvm_ioctls::{IoEventAddress, Kvm, VmFd};
use vm_memory::{Address, GuestAddress, GuestMemory as _, GuestMemoryRegion};

use super::GuestMemory;
use super::boot::{self, BootError};
use super::bus::Bus;
use super::cpu::{self, CpuError};
use super::event_loop::{EventLoop, Subscriber};
use super::layout::{IRQ_BASE, IRQ_MAX, KVM_TSS_ADDRESS, MMIO_START};
use super::memory::{self, MemoryError};
use super::pause::{Gate, PauseError};
use super::vcpu::{FirstEntry, StopReason, VcpuExited, VcpuThread, kick_signal};
use crate::devices::legacy::console::{ConsoleOutput, ConsoleTail};
use crate::devices::legacy::serial::{self, COM1_IRQ};
use crate::devices::virtio::fs::{
    FsStats, LockCanceller, MAX_WORKERS_PER_QUEUE, ShareConfig, ShareFs, VirtioFs,
};
use crate::devices::virtio::mmio::{
    INTERRUPT_ACK_OFFSET, MMIO_WINDOW, MmioTransport, QUEUE_NOTIFY_OFFSET,
};
use crate::devices::virtio::net::{Net, NetHandle, NetOptions};
use crate::devices::virtio::vsock::{Vsock, VsockHandle};
use crate::devices::virtio::{INT_VRING, VirtioDevice};
use crate::host::HostRoot;
use crate::host::kvm::{self as host_kvm, KvmBackend};

/// The guest's vsock context id.
pub const GUEST_CID: u64 = guest_init::protocol::GUEST_CID;
/// The virtio-fs tag of the shared directory.
pub const SHARE_TAG: &str = "runvm";
/// Set to `0`, the NICs of the VMs built from then on never hand their queues to the
/// kernel's vhost-net: the VMM moves every frame itself (for comparing both in one run).
pub const VHOST_NET_ENV: &str = "RUNVM_VHOST_NET";

/// Worker threads per request queue of the shared directory's device, unless
/// [`FS_WORKERS_ENV`] says otherwise: two, so that a request waiting on the host does not
/// hold up the next one the guest sent.
pub const FS_WORKERS: usize = 2;
/// Set to a number (0 to [`MAX_WORKERS_PER_QUEUE`]), the worker threads per request queue of
/// the VMs built from then on; 0 serves the requests on the device's event loop, one at a
/// time (for comparing them in one run).
pub const FS_WORKERS_ENV: &str = "RUNVM_FS_WORKERS";

/// The worker threads per request queue the environment asks for ([`FS_WORKERS_ENV`]).
fn fs_workers() -> usize {
    std::env::var(FS_WORKERS_ENV)
        .ok()
        .and_then(|value| value.parse().ok())
        .map_or(FS_WORKERS, |n: usize| n.min(MAX_WORKERS_PER_QUEUE))
}

/// Whether the environment lets the NICs use vhost-net ([`VHOST_NET_ENV`]; on by default, and
/// used only where `/dev/vhost-net` opens).
fn vhost_net_allowed() -> bool {
    std::env::var_os(VHOST_NET_ENV).is_none_or(|value| value != "0")
}

/// What to boot.
#[derive(Debug, Clone)]
pub struct VmConfig {
    /// The guest kernel: an ELF vmlinux with a PVH entry, or a bzImage.
    pub kernel: PathBuf,
    /// The initramfs, if any.
    pub initramfs: Option<PathBuf>,
    /// vCPUs (1 to 32).
    pub vcpus: u8,
    /// Guest RAM in MiB.
    pub memory_mib: u64,
    /// Appended to the kernel command line.
    pub extra_cmdline: String,
    /// Where the guest console is written, if anywhere.
    pub console_log: Option<PathBuf>,
    /// Echo the guest console on stderr, and let the kernel print everything.
    pub debug: bool,
    /// A host directory exported to the guest over virtio-fs as [`SHARE_TAG`].
    pub shared_dir: Option<PathBuf>,
    /// How it is served (cache policy, descriptor budget): chosen by whoever assembled it.
    pub share_config: ShareConfig,
    /// virtio-net devices (slots 0..n), each without a backend until one is attached
    /// through [`MicroVm::nics`].
    pub net_slots: u32,
    /// Whether those NICs offer a tap's checksum and segmentation offloads (not for a
    /// backend such as passt's socket, which takes whole frames only).
    pub net_offloads: bool,
    /// Start even on kvm_pvm, where guests cannot really run: for measuring the VMM's own
    /// set-up, which is native there.
    pub allow_software_kvm: bool,
}

/// The most vCPUs a runvm guest gets.
pub const MAX_VCPUS: u8 = 32;

/// Errors building or starting the VM.
#[derive(Debug, thiserror::Error)]
pub enum VmError {
    /// This host's KVM cannot run ordinary guests.
    #[error(
        "/dev/kvm here is kvm_pvm, software nested virtualisation under which ordinary guest \
         kernels crawl and crash: runvm needs hardware KVM (see `runvm check`)"
    )]
    PvmHost,
    /// /dev/kvm cannot be used.
    #[error("cannot use /dev/kvm: {0}")]
    Kvm(String),
    /// A KVM ioctl failed while building the VM.
    #[error("{what}: {source}")]
    Ioctl {
        /// Which step.
        what: &'static str,
        /// The error.
        source: kvm_ioctls::Error,
    },
    /// The vCPU count is out of range.
    #[error("{0} vCPUs requested (1 to {MAX_VCPUS})")]
    VcpuCount(u8),
    /// Guest memory.
    #[error(transparent)]
    Memory(#[from] MemoryError),
    /// Loading the guest.
    #[error(transparent)]
    Boot(#[from] BootError),
    /// Setting up a vCPU.
    #[error(transparent)]
    Cpu(#[from] CpuError),
    /// A device could not be created.
    #[error("{what}: {message}")]
    Device {
        /// Which device.
        what: &'static str,
        /// Why.
        message: String,
    },
    /// More virtio devices than IRQs.
    #[error("too many virtio devices")]
    TooManyDevices,
    /// A host resource (file, eventfd, thread).
    #[error("{what}: {source}")]
    Io {
        /// Which step.
        what: &'static str,
        /// The error.
        source: std::io::Error,
    },
}

fn ioctl(what: &'static str) -> impl FnOnce(kvm_ioctls::Error) -> VmError {
    move |source| VmError::Ioctl { what, source }
}

fn io(what: &'static str) -> impl FnOnce(std::io::Error) -> VmError {
    move |source| VmError::Io { what, source }
}

/// A running microVM.
pub struct MicroVm {
    vcpus: Vec<VcpuThread>,
    stop: Arc<AtomicBool>,
    gate: Arc<Gate>,
    exited: Receiver<VcpuExited>,
    event_loop: EventLoop,
    /// The shared directory's loop, when there is one.
    file_loop: Option<EventLoop>,
    vsock: VsockHandle,
    nics: Vec<NetHandle>,
    /// The shared directory's request counters, when there is one.
    fs_stats: Option<Arc<FsStats>>,
    /// Ends the shared directory's lock waits, when there is one.
    fs_locks: Option<LockCanceller>,
    fs_share: Option<Arc<ShareFs>>,
    bus: Arc<Bus>,
    console: ConsoleTail,
    first_entry: FirstEntry,
    created: Instant,
    // Kept alive for as long as the vCPUs run.
    _vm: VmFd,
    _mem: GuestMemory,
}

/// The virtio devices of a VM being built: their mmio transports (for the bus) and their
/// event subscribers (for an event loop), one 4 KiB window and one IRQ each.
#[derive(Default)]
struct VirtioSlots {
    transports: Vec<(u64, Arc<Mutex<MmioTransport>>)>,
    /// For the devices' event loop (vsock, net).
    subscribers: Vec<Subscriber>,
    /// For the shared directory's own loop.
    file_subscribers: Vec<Subscriber>,
}

/// Which event loop serves a device.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Lane {
    /// The devices' loop.
    Devices,
    /// The shared directory's loop: its requests wait on host I/O.
    Files,
}

impl VirtioSlots {
    /// Gives `device` the next window and IRQ: its transport's irqfd to KVM, an ioeventfd per
    /// queue on QueueNotify (datamatch: the queue index), and a `virtio_mmio.device=` entry.
    fn attach<D>(
        &mut self,
        vm: &VmFd,
        mem: &GuestMemory,
        cmdline: &mut linux_loader::cmdline::Cmdline,
        device: Arc<Mutex<D>>,
        lane: Lane,
    ) -> Result<(), VmError>
    where
        D: VirtioDevice + event_manager::MutEventSubscriber + 'static,
    {
        let index = self.transports.len() as u64;
        let irq = IRQ_BASE + index as u32;
        if irq > IRQ_MAX {
            return Err(VmError::TooManyDevices);
        }
        let base = MMIO_START + index * MMIO_WINDOW;
        let as_virtio: Arc<Mutex<dyn VirtioDevice>> = device.clone();
        let transport = MmioTransport::new(as_virtio, mem.clone()).map_err(io("virtio-mmio"))?;
        vm.register_irqfd(transport.interrupt().irqfd(), irq)
            .map_err(ioctl("KVM_IRQFD (virtio)"))?;
        // The guest's acknowledgement of used buffers alone stays in KVM (see mmio.rs).
        vm.register_ioevent(
            transport.vring_ack_event(),
            &IoEventAddress::Mmio(base + INTERRUPT_ACK_OFFSET),
            INT_VRING,
        )
        .map_err(ioctl("KVM_IOEVENTFD (interrupt ack)"))?;
        {
            let dev = device.lock().unwrap_or_else(|p| p.into_inner());
            for (i, evt) in dev.queue_events().iter().enumerate() {
                let addr = IoEventAddress::Mmio(base + QUEUE_NOTIFY_OFFSET);
                vm.register_ioevent(evt, &addr, i as u32)
                    .map_err(ioctl("KVM_IOEVENTFD"))?;
            }
        }
        cmdline
            .add_virtio_mmio_device(MMIO_WINDOW, GuestAddress(base), irq, None)
            .map_err(BootError::from)?;
        self.transports
            .push((base, Arc::new(Mutex::new(transport))));
        match lane {
            Lane::Devices => self.subscribers.push(device),
            Lane::Files => self.file_subscribers.push(device),
        }
        Ok(())
    }
}

/// The kernel command line every runvm guest gets before the per-VM parts.
///
/// `virtio_net.napi_tx=0`: the guest frees sent frames when it sends the next ones instead
/// of asking for an interrupt per completed frame. Each interrupt costs the guest VM exits
/// (status read, acknowledge, EOI); a TCP sender in the container took one per frame, now
/// only the interrupts of received frames remain (measured in L1: about half the
/// interrupts while sending, throughput up about a fifth both ways).
fn base_cmdline(debug: bool) -> String {
    let mut c = String::from(
        "console=ttyS0 8250.nr_uarts=1 reboot=k panic=-1 io_delay=none no_timer_check \
         tsc=reliable rdinit=/init virtio_net.napi_tx=0",
    );
    // Every console byte is a VM exit: keep the kernel quiet unless debugging.
    c.push_str(if debug {
        " loglevel=7"
    } else {
        " quiet loglevel=1"
    });
    c
}

fn register_memory(vm: &VmFd, mem: &GuestMemory) -> Result<(), VmError> {
    for (slot, region) in mem.iter().enumerate() {
        let host = mem
            .get_host_address(region.start_addr())
            .map_err(|_| VmError::Kvm("guest memory region has no host mapping".into()))?;
        let r = kvm_userspace_memory_region {
            slot: slot as u32,
            flags: 0,
            guest_phys_addr: region.start_addr().raw_value(),
            memory_size: region.len(),
            userspace_addr: host as u64,
        };
        // SAFETY: the region is a live mapping owned by `mem`, which MicroVm keeps until the
        // VM's file descriptor is dropped after every vCPU has stopped.
        unsafe { vm.set_user_memory_region(r) }.map_err(ioctl("KVM_SET_USER_MEMORY_REGION"))?;
    }
    Ok(())
}

impl MicroVm {
    /// Builds and starts the VM. On error nothing is left running.
    pub fn start(config: &VmConfig) -> Result<Self, VmError> {
        let created = Instant::now();
        if config.vcpus == 0 || config.vcpus > MAX_VCPUS {
            return Err(VmError::VcpuCount(config.vcpus));
        }
        if !config.allow_software_kvm && host_kvm::backend(&HostRoot::system()) == KvmBackend::Pvm {
            return Err(VmError::PvmHost);
        }
        let kvm = Kvm::new().map_err(|e| VmError::Kvm(e.to_string()))?;
        let vm = kvm.create_vm().map_err(ioctl("KVM_CREATE_VM"))?;
        vm.set_tss_address(KVM_TSS_ADDRESS)
            .map_err(ioctl("KVM_SET_TSS_ADDR"))?;
        vm.create_irq_chip().map_err(ioctl("KVM_CREATE_IRQCHIP"))?;
        let pit = kvm_pit_config {
            flags: KVM_PIT_SPEAKER_DUMMY,
            ..Default::default()
        };
        vm.create_pit2(pit).map_err(ioctl("KVM_CREATE_PIT2"))?;

        let mem = memory::create(config.memory_mib)?;
        register_memory(&vm, &mem)?;

        let log = match &config.console_log {
            Some(p) => Some(File::create(p).map_err(io("cannot create the console log"))?),
            None => None,
        };
        let (out, console) = ConsoleOutput::new(log, config.debug);
        let (serial, serial_irq) = serial::new(out).map_err(io("serial port"))?;
        vm.register_irqfd(&serial_irq, COM1_IRQ)
            .map_err(ioctl("KVM_IRQFD (serial)"))?;

        let mut cmdline = boot::new_cmdline(&base_cmdline(config.debug))?;
        let (vsock_dev, vsock) = Vsock::new(GUEST_CID).map_err(io("virtio-vsock"))?;
        let mut virtio = VirtioSlots::default();
        virtio.attach(
            &vm,
            &mem,
            &mut cmdline,
            Arc::new(Mutex::new(vsock_dev)),
            Lane::Devices,
        )?;
        let mut fs_stats = None;
        let mut fs_locks = None;
        let mut fs_share = None;
        if let Some(dir) = &config.shared_dir {
            // A request queue per vCPU: the guest sends each CPU's requests on its own.
            let fs = VirtioFs::with_config(SHARE_TAG, dir, config.share_config)
                .and_then(|fs| fs.with_queues(usize::from(config.vcpus), fs_workers()))
                .map_err(|e| VmError::Device {
                    what: "virtio-fs",
                    message: e.to_string(),
                })?;
            fs_stats = Some(fs.stats());
            fs_locks = Some(fs.lock_canceller());
            fs_share = Some(fs.share_handle());
            virtio.attach(
                &vm,
                &mem,
                &mut cmdline,
                Arc::new(Mutex::new(fs)),
                Lane::Files,
            )?;
        }
        let mut nics = Vec::new();
        let net_options = NetOptions {
            offloads: config.net_offloads,
            vhost: vhost_net_allowed(),
        };
        for slot in 0..config.net_slots {
            let (net, handle) = Net::with_options(slot, net_options).map_err(io("virtio-net"))?;
            virtio.attach(
                &vm,
                &mem,
                &mut cmdline,
                Arc::new(Mutex::new(net)),
                Lane::Devices,
            )?;
            nics.push(handle);
        }
        if !config.extra_cmdline.is_empty() {
            cmdline
                .insert_str(&config.extra_cmdline)
                .map_err(BootError::from)?;
        }

        let entry = boot::load(
            &mem,
            &config.kernel,
            config.initramfs.as_deref(),
            &cmdline,
            config.vcpus,
        )?;
        let boot_cpu = cpu::prepare_boot_cpu(&mem, entry)?;
        let cpuid = cpu::supported_cpuid(&kvm)?;
        let mut fds = Vec::new();
        for i in 0..config.vcpus {
            let fd = vm
                .create_vcpu(u64::from(i))
                .map_err(ioctl("KVM_CREATE_VCPU"))?;
            let boot_state = (i == 0).then_some(&boot_cpu);
            cpu::configure(&fd, &cpuid, i, config.vcpus, boot_state)?;
            fds.push(fd);
        }

        let event_loop =
            EventLoop::spawn("vmm-events", virtio.subscribers).map_err(io("event loop"))?;
        let file_loop = if virtio.file_subscribers.is_empty() {
            None
        } else {
            let files = EventLoop::spawn("vmm-files", virtio.file_subscribers);
            Some(files.map_err(io("file event loop"))?)
        };
        let bus = Arc::new(Bus::new(serial, virtio.transports));
        let stop = Arc::new(AtomicBool::new(false));
        let gate = Arc::new(Gate::default());
        let first_entry = FirstEntry::default();
        let (tx, exited) = channel();
        let mut vm_handle = MicroVm {
            vcpus: Vec::new(),
            stop: stop.clone(),
            gate: gate.clone(),
            exited,
            event_loop,
            file_loop,
            vsock,
            nics,
            fs_stats,
            fs_locks,
            fs_share,
            bus: bus.clone(),
            console,
            first_entry: first_entry.clone(),
            created,
            _vm: vm,
            _mem: mem,
        };
        // vCPU 0 last, so the application processors are waiting when the BSP boots.
        for (i, fd) in fds.into_iter().enumerate().rev() {
            let t = VcpuThread::spawn(
                i as u8,
                fd,
                bus.clone(),
                stop.clone(),
                gate.clone(),
                first_entry.clone(),
                tx.clone(),
            )
            .map_err(io("vCPU thread"))?;
            vm_handle.vcpus.push(t);
        }
        Ok(vm_handle)
    }

    /// The host side of the guest's NICs, by slot.
    pub fn nics(&self) -> &[NetHandle] {
        &self.nics
    }

    /// What the shared directory's requests have cost so far, by opcode (`None` without
    /// a shared directory).
    pub fn fs_stats(&self) -> Option<&FsStats> {
        self.fs_stats.as_deref()
    }

    /// The shared directory's server (`None` without a shared directory).
    pub fn fs_share(&self) -> Option<Arc<ShareFs>> {
        self.fs_share.clone()
    }

    /// A handle that answers the guest's lock waits on the shared directory `EINTR`.
    pub fn fs_lock_canceller(&self) -> Option<LockCanceller> {
        self.fs_locks.clone()
    }

    /// The host side of the guest's vsock.
    pub fn vsock(&self) -> &VsockHandle {
        &self.vsock
    }

    /// The last lines the guest console printed.
    pub fn console(&self) -> &ConsoleTail {
        &self.console
    }

    /// When [`MicroVm::start`] began.
    pub fn created(&self) -> Instant {
        self.created
    }

    /// When vCPU 0 first entered the guest, once it has.
    pub fn first_entry(&self) -> Option<Instant> {
        self.first_entry.get().copied()
    }

    /// VM exits so far, by kind.
    pub fn exit_counts(&self) -> std::collections::BTreeMap<&'static str, u64> {
        self.bus.stats.snapshot()
    }

    /// The VM's pause control, for whoever serves `runvm pause` and `runvm resume`.
    pub fn pauser(&self) -> Pauser {
        Pauser {
            gate: self.gate.clone(),
        }
    }

    /// Waits up to `timeout` for the guest to stop the VM; `None` if it still runs.
    pub fn wait_stop(&self, timeout: Duration) -> Option<StopReason> {
        self.exited.recv_timeout(timeout).ok().map(|e| e.reason)
    }

    /// Stops every vCPU and the event loop, and waits for them.
    pub fn shutdown(mut self) {
        self.stop_all();
    }

    fn stop_all(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        self.gate.wake();
        for t in self.vcpus.drain(..) {
            // A vCPU that does not stop within a second is left detached; the process exits
            // soon after, which ends it.
            let _ = t.stop_and_join(Duration::from_secs(1));
        }
        // Both told first, then both waited for.
        self.event_loop.request_stop();
        if let Some(files) = self.file_loop.as_mut() {
            files.request_stop();
            let _ = files.stop();
        }
        let _ = self.event_loop.stop();
    }
}

/// Pauses and resumes a VM's vCPUs from any thread.
#[derive(Debug, Clone)]
pub struct Pauser {
    gate: Arc<Gate>,
}

impl Pauser {
    /// Stops every vCPU between two guest instructions; fails after `limit`.
    pub fn pause(&self, limit: Duration) -> Result<(), PauseError> {
        self.gate.pause(kick_signal(), limit)
    }

    /// Lets the vCPUs run again.
    pub fn resume(&self) {
        self.gate.resume();
    }
}

impl Drop for MicroVm {
    fn drop(&mut self) {
        self.stop_all();
    }
}
