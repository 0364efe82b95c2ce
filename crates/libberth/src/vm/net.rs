//! The container's network namespace in a VM container (docs/VM.md, "Networking").
//!
//! Host side (`attach`, during `create`): the network namespace of the config — the one named by
//! `path` (as engines give it), or a new one made here — is where the monitor and qemu live. Every
//! Ethernet interface present in it (not `lo`) gets a tap device in the same namespace, coupled to
//! it by tc: an ingress qdisc on each with a u32 match-all filter whose mirred action redirects
//! every frame to the other (the interface's traffic goes to the tap, i.e. to qemu, and what the
//! guest sends leaves through the interface). qemu gets the taps' descriptors and a virtio-net
//! device per interface with the interface's MAC. The addresses, routes and MTU read from the
//! namespace (netlink) go to the guest in `create` ([`proto::Network`]), range-checked here.
//!
//! Guest side (`configure_guest`, in the agent): `lo` up, each virtio-net device found by its MAC,
//! renamed to the interface's name, its MTU, addresses and routes set; the container then uses
//! the guest's network namespace.

use super::proto::{NetInterface, NetRoute, Network};
use crate::netlink::{self, Socket};
use crate::{bail, err, Error, Result};
use oci_spec::runtime::Spec;
use std::net::IpAddr;
use std::os::fd::{AsRawFd, OwnedFd};

/// At most this many interfaces (virtio-net devices), addresses per interface and routes.
pub const MAX_INTERFACES: usize = 8;
const MAX_ADDRESSES: usize = 64;
const MAX_ROUTES: usize = 256;
/// The taps' names in the container's namespace: `berth-tap<n>`.
pub const TAP_PREFIX: &str = "berth-tap";
const ARPHRD_ETHER: u16 = 1;

/// The container's network namespace and what Berth added to it. Dropping it removes the
/// couplings (the taps go with their last descriptor) unless `keep` was called.
pub struct Attached {
    /// The container's network namespace; None only for an unprivileged caller asking for a new
    /// one (it cannot make one: the guest then has `lo` only and qemu no network device).
    pub netns: Option<OwnedFd>,
    /// One per interface, in the order of `network.interfaces`.
    pub taps: Vec<OwnedFd>,
    pub network: Network,
    /// The interfaces' indexes (their ingress qdiscs are ours).
    coupled: Vec<i32>,
    armed: bool,
}

impl Attached {
    /// The MACs for qemu's virtio-net devices.
    pub fn macs(&self) -> Vec<String> {
        self.network.interfaces.iter().map(|i| i.mac.clone()).collect()
    }

    /// `create` succeeded: the couplings are the monitor's to remove now.
    pub fn keep(mut self) {
        self.armed = false;
    }

    /// Remove the ingress qdiscs Berth put on the interfaces (the calling thread is in the
    /// namespace).
    pub fn uncouple_here(&self) {
        if let Ok(mut s) = Socket::open() {
            for &i in &self.coupled {
                let _ = s.del_ingress_qdisc(i);
            }
        }
    }
}

impl Drop for Attached {
    fn drop(&mut self) {
        if let (true, false, Some(ns)) = (self.armed, self.coupled.is_empty(), &self.netns) {
            let _ = in_netns(ns, || {
                self.uncouple_here();
                Ok(())
            });
        }
    }
}

fn setns(fd: &OwnedFd) -> std::io::Result<()> {
    // SAFETY: setns on a namespace descriptor; it changes the calling thread only.
    if unsafe { libc::setns(fd.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// Enter the container's network namespace (the monitor, before it starts qemu).
pub fn enter(fd: &OwnedFd) -> std::io::Result<()> {
    setns(fd)
}

/// Run `f` in a thread of its own inside the namespace (the caller's namespace is not changed).
fn in_netns<T: Send>(ns: &OwnedFd, f: impl FnOnce() -> Result<T> + Send) -> Result<T> {
    std::thread::scope(|s| {
        s.spawn(|| {
            setns(ns).map_err(|e| Error::sys("setns (the container's network namespace)", e))?;
            f()
        })
        .join()
        .unwrap_or_else(|_| Err(err!("network namespace thread panicked")))
    })
}

/// A new network namespace, held by the returned descriptor.
fn new_netns() -> Result<OwnedFd> {
    std::thread::scope(|s| {
        s.spawn(|| {
            // SAFETY: unshare of the calling thread's network namespace (this thread only).
            if unsafe { libc::unshare(libc::CLONE_NEWNET) } != 0 {
                return Err(Error::sys(
                    "linux.namespaces: a new network namespace",
                    std::io::Error::last_os_error(),
                ));
            }
            std::fs::File::open("/proc/thread-self/ns/net")
                .map(OwnedFd::from)
                .map_err(|e| Error::sys("/proc/thread-self/ns/net", e))
        })
        .join()
        .unwrap_or_else(|_| Err(err!("network namespace thread panicked")))
    })
}

/// The config's network namespace: `Some(path)`, `None` for a new one. No network namespace
/// (host networking) cannot be given to a VM.
pub fn namespace_path(spec: &Spec) -> Result<Option<std::path::PathBuf>> {
    let ns = spec.linux().as_ref().and_then(|l| l.namespaces().as_ref());
    let net = ns.and_then(|n| {
        n.iter()
            .find(|n| n.typ() == oci_spec::runtime::LinuxNamespaceType::Network)
    });
    match net {
        None => bail!(
            "linux.namespaces: a VM container needs a network namespace (the host's network cannot be given to a VM); add {{\"type\": \"network\"}}"
        ),
        Some(n) => Ok(n.path().clone().filter(|p| !p.as_os_str().is_empty())),
    }
}

/// Open (or make) the container's network namespace, read its interfaces, and couple a tap to
/// each. Nothing is left in the namespace if this fails.
pub fn attach(spec: &Spec) -> Result<Attached> {
    let netns = match namespace_path(spec)? {
        Some(p) => {
            let f = std::fs::File::open(&p)
                .map_err(|e| Error::sys(format!("linux.namespaces: network path {}", p.display()), e))?;
            OwnedFd::from(f)
        }
        // An unprivileged caller cannot make a network namespace (CAP_SYS_ADMIN); a new one
        // holds nothing but `lo` anyway, which the guest has of its own.
        // SAFETY: geteuid has no preconditions.
        None if unsafe { libc::geteuid() } != 0 => {
            return Ok(Attached {
                netns: None,
                taps: Vec::new(),
                network: Network::default(),
                coupled: Vec::new(),
                armed: true,
            });
        }
        None => new_netns()?,
    };
    let mut att = Attached {
        netns: Some(netns),
        taps: Vec::new(),
        network: Network::default(),
        coupled: Vec::new(),
        armed: true,
    };
    let ns = att.netns.as_ref().expect("just set");
    let (network, taps, coupled) = in_netns(ns, || {
        let mut sock = Socket::open().map_err(|e| Error::sys("netlink", e))?;
        let network = read(&mut sock)?;
        validate(&network).map_err(Error::new)?;
        let mut taps = Vec::new();
        let mut coupled = Vec::new();
        let r = couple_all(&mut sock, &network, &mut taps, &mut coupled);
        if let Err(e) = r {
            for &i in &coupled {
                let _ = sock.del_ingress_qdisc(i);
            }
            return Err(e);
        }
        Ok((network, taps, coupled))
    })?;
    att.network = network;
    att.taps = taps;
    att.coupled = coupled;
    Ok(att)
}

fn mac_text(m: &[u8]) -> String {
    m.iter().map(|b| format!("{b:02x}")).collect::<Vec<_>>().join(":")
}

/// A name the guest can give a device (and that is safe in qemu's and the guest's hands).
fn valid_ifname(n: &str) -> bool {
    !n.is_empty()
        && n.len() < libc::IFNAMSIZ
        && n != "."
        && n != ".."
        && n.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.@".contains(&b))
}

/// Read the namespace's interfaces, addresses and routes (those the guest needs).
fn read(sock: &mut Socket) -> Result<Network> {
    let nl = |e| Error::sys("netlink (the container's network namespace)", e);
    let links = sock.links().map_err(nl)?;
    let addrs = sock.addresses().map_err(nl)?;
    let routes = sock.routes().map_err(nl)?;
    let mut net = Network::default();
    let mut by_index = Vec::new();
    for l in &links {
        if l.flags & libc::IFF_LOOPBACK as u32 != 0 {
            continue;
        }
        if l.name.starts_with(TAP_PREFIX) {
            bail!(
                "network namespace: {:?} exists already (another VM container uses this namespace)",
                l.name
            );
        }
        if l.hw_type != ARPHRD_ETHER || l.mac.len() != 6 {
            crate::log::warn(&format!(
                "network namespace: interface {:?} is not Ethernet: not given to the VM",
                l.name
            ));
            continue;
        }
        if !valid_ifname(&l.name) {
            bail!("network namespace: interface name {:?} not usable in the VM", l.name);
        }
        if !(68..=65535).contains(&l.mtu) {
            bail!(
                "network namespace: interface {:?}: MTU {} out of range (68-65535)",
                l.name,
                l.mtu
            );
        }
        if net.interfaces.len() == MAX_INTERFACES {
            bail!("network namespace: more than {MAX_INTERFACES} interfaces");
        }
        let mut addresses = Vec::new();
        for a in addrs.iter().filter(|a| a.index == l.index) {
            let max = if a.addr.is_ipv4() { 32 } else { 128 };
            // The guest makes its own IPv6 link-local address (the same: same MAC).
            let link_local = matches!(a.addr, IpAddr::V6(v) if v.segments()[0] & 0xffc0 == 0xfe80);
            if link_local || a.scope == netlink::RT_SCOPE_HOST || a.prefix > max {
                continue;
            }
            addresses.push(format!("{}/{}", a.addr, a.prefix));
        }
        if addresses.len() > MAX_ADDRESSES {
            bail!(
                "network namespace: interface {:?}: more than {MAX_ADDRESSES} addresses",
                l.name
            );
        }
        by_index.push((l.index, l.name.clone()));
        net.interfaces.push(NetInterface {
            name: l.name.clone(),
            mac: mac_text(&l.mac),
            mtu: l.mtu,
            addresses,
        });
    }
    for r in routes {
        // The main table's unicast routes through our interfaces; the kernel's own (the
        // prefix routes of addresses, fe80::/64) the guest kernel makes itself.
        if r.table != netlink::RT_TABLE_MAIN as u32
            || r.rtype != netlink::RTN_UNICAST
            || r.protocol == netlink::RTPROT_KERNEL
            || r.multipath
        {
            continue;
        }
        let Some((_, dev)) = by_index.iter().find(|(i, _)| *i == r.oif) else {
            continue;
        };
        let unspecified = |fam: u8| -> IpAddr {
            if fam == libc::AF_INET6 as u8 {
                IpAddr::from([0u16; 8])
            } else {
                IpAddr::from([0u8; 4])
            }
        };
        let dst = r.dst.unwrap_or_else(|| unspecified(r.family));
        let max = if dst.is_ipv4() { 32 } else { 128 };
        if r.dst_len > max || (r.scope != 0 && r.scope != netlink::RT_SCOPE_LINK) {
            continue;
        }
        if net.routes.len() == MAX_ROUTES {
            bail!("network namespace: more than {MAX_ROUTES} routes");
        }
        net.routes.push(NetRoute {
            destination: format!("{dst}/{}", r.dst_len),
            gateway: r.gateway.map(|g| g.to_string()),
            source: r.prefsrc.map(|s| s.to_string()),
            device: dev.clone(),
            metric: r.priority,
            scope: r.scope,
        });
    }
    Ok(net)
}

/// A tap per interface, coupled to it both ways.
fn couple_all(sock: &mut Socket, net: &Network, taps: &mut Vec<OwnedFd>, coupled: &mut Vec<i32>) -> Result<()> {
    for (n, ifc) in net.interfaces.iter().enumerate() {
        let name = format!("{TAP_PREFIX}{n}");
        let fd = netlink::open_tap(&name).map_err(|e| Error::sys(format!("network namespace: tap {name}"), e))?;
        let c = std::ffi::CString::new(name.as_str()).expect("no NUL");
        // SAFETY: if_nametoindex with a NUL-terminated name (this thread's namespace).
        let tap = unsafe { libc::if_nametoindex(c.as_ptr()) } as i32;
        let cn = std::ffi::CString::new(ifc.name.as_str()).expect("no NUL");
        // SAFETY: as above.
        let dev = unsafe { libc::if_nametoindex(cn.as_ptr()) } as i32;
        if tap == 0 || dev == 0 {
            bail!("network namespace: {} or {name} vanished", ifc.name);
        }
        let ctx = |what: &str| format!("network namespace: {what}");
        sock.set_link(tap, Some(true), Some(ifc.mtu), None)
            .map_err(|e| Error::sys(ctx(&format!("{name} up, mtu {}", ifc.mtu)), e))?;
        sock.add_ingress_qdisc(dev)
            .map_err(|e| Error::sys(ctx(&format!("ingress qdisc on {} (one exists already?)", ifc.name)), e))?;
        coupled.push(dev);
        sock.add_ingress_qdisc(tap)
            .map_err(|e| Error::sys(ctx(&format!("ingress qdisc on {name}")), e))?;
        sock.add_redirect(dev, tap)
            .map_err(|e| Error::sys(ctx(&format!("tc redirect {} -> {name}", ifc.name)), e))?;
        sock.add_redirect(tap, dev)
            .map_err(|e| Error::sys(ctx(&format!("tc redirect {name} -> {}", ifc.name)), e))?;
        taps.push(fd);
    }
    Ok(())
}

/// `a.b.c.d/n` or `x::y/n`, the prefix in range.
pub fn parse_cidr(s: &str) -> Option<(IpAddr, u8)> {
    let (a, p) = s.split_once('/')?;
    let a: IpAddr = a.parse().ok()?;
    let p: u8 = p.parse().ok()?;
    (p <= if a.is_ipv4() { 32 } else { 128 }).then_some((a, p))
}

fn parse_mac(s: &str) -> Option<Vec<u8>> {
    let v: Vec<u8> = s
        .split(':')
        .map(|h| u8::from_str_radix(h, 16).ok())
        .collect::<Option<_>>()?;
    (v.len() == 6).then_some(v)
}

/// Check what the guest is given (the host built it, the agent checks it again).
pub fn validate(net: &Network) -> std::result::Result<(), String> {
    if net.interfaces.len() > MAX_INTERFACES || net.routes.len() > MAX_ROUTES {
        return Err("network: too many interfaces or routes".into());
    }
    for i in &net.interfaces {
        if !valid_ifname(&i.name) || parse_mac(&i.mac).is_none() || !(68..=65535).contains(&i.mtu) {
            return Err(format!(
                "network: interface {:?} ({}, mtu {}) not usable",
                i.name, i.mac, i.mtu
            ));
        }
        if i.addresses.len() > MAX_ADDRESSES || i.addresses.iter().any(|a| parse_cidr(a).is_none()) {
            return Err(format!("network: interface {:?}: bad addresses", i.name));
        }
    }
    for r in &net.routes {
        let ok = parse_cidr(&r.destination).is_some()
            && r.gateway.as_deref().is_none_or(|g| g.parse::<IpAddr>().is_ok())
            && r.source.as_deref().is_none_or(|g| g.parse::<IpAddr>().is_ok())
            && net.interfaces.iter().any(|i| i.name == r.device)
            && (r.scope == 0 || r.scope == netlink::RT_SCOPE_LINK);
        if !ok {
            return Err(format!("network: route {r:?} not usable"));
        }
    }
    Ok(())
}

/// In the guest: `lo` up, then each interface (found by its MAC; waited for ≤ 5 s, the
/// virtio-net driver probes as its module loads) named, sized, addressed and up, then the routes.
pub fn configure_guest(net: &Network) -> std::result::Result<(), String> {
    validate(net)?;
    let io = |what: &str, e: std::io::Error| format!("network: {what}: {e}");
    let mut sock = Socket::open().map_err(|e| io("netlink", e))?;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    let links = loop {
        let links = sock.links().map_err(|e| io("links", e))?;
        let all = net
            .interfaces
            .iter()
            .all(|i| links.iter().any(|l| Some(&l.mac) == parse_mac(&i.mac).as_ref()));
        if all || std::time::Instant::now() > deadline {
            break links;
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    };
    for l in links.iter().filter(|l| l.flags & libc::IFF_LOOPBACK as u32 != 0) {
        sock.set_link(l.index, Some(true), None, None)
            .map_err(|e| io("lo up", e))?;
    }
    // Each device found by its MAC (indexes do not change with names), renamed in two steps
    // (a temporary name first: the guest's own names may be the wanted ones swapped), each rename
    // with the device down.
    let mut index_of = Vec::new();
    for (n, i) in net.interfaces.iter().enumerate() {
        let mac = parse_mac(&i.mac);
        let l = links
            .iter()
            .find(|l| Some(&l.mac) == mac.as_ref())
            .ok_or_else(|| format!("network: no virtio-net device with MAC {} for {}", i.mac, i.name))?;
        if l.name != i.name {
            sock.set_link(l.index, Some(false), None, None)
                .map_err(|e| io(&format!("{} down", l.name), e))?;
            sock.set_link(l.index, None, None, Some(&format!("berth-net{n}")))
                .map_err(|e| io(&format!("rename {}", l.name), e))?;
        }
        index_of.push((i.name.clone(), l.index, l.name != i.name));
    }
    for (n, (name, index, renamed)) in index_of.iter().enumerate() {
        if !renamed {
            continue;
        }
        if let Err(e) = sock.set_link(*index, None, None, Some(name)) {
            if e.raw_os_error() != Some(libc::EEXIST) {
                return Err(io(&format!("rename to {name}"), e));
            }
            // A device of the guest's own holds the name: moved aside.
            let now = sock.links().map_err(|e| io("links", e))?;
            if let Some(other) = now.iter().find(|o| o.name == *name) {
                let _ = sock.set_link(other.index, Some(false), None, None);
                sock.set_link(other.index, None, None, Some(&format!("berth-old{n}")))
                    .map_err(|e| io(&format!("rename {name}"), e))?;
            }
            sock.set_link(*index, None, None, Some(name))
                .map_err(|e| io(&format!("rename to {name}"), e))?;
        }
    }
    for (i, (_, index, _)) in net.interfaces.iter().zip(&index_of) {
        let index = *index;
        sock.set_link(index, Some(true), Some(i.mtu), None)
            .map_err(|e| io(&format!("{} up, mtu {}", i.name, i.mtu), e))?;
        for a in &i.addresses {
            let (addr, prefix) = parse_cidr(a).expect("validated");
            let flags = if addr.is_ipv6() { netlink::IFA_F_NODAD } else { 0 };
            match sock.add_address(index, addr, prefix, flags) {
                Err(e) if e.raw_os_error() != Some(libc::EEXIST) => {
                    return Err(io(&format!("address {a} on {}", i.name), e))
                }
                _ => {}
            }
        }
    }
    // Link-scope routes first: a gateway must be reachable when its route is added.
    let mut routes: Vec<&NetRoute> = net.routes.iter().collect();
    routes.sort_by_key(|r| std::cmp::Reverse(r.scope));
    for r in routes {
        let (dst, dst_len) = parse_cidr(&r.destination).expect("validated");
        let oif = index_of
            .iter()
            .find(|(n, _, _)| *n == r.device)
            .map(|x| x.1)
            .unwrap_or(0);
        let route = netlink::Route {
            family: if dst.is_ipv4() {
                libc::AF_INET as u8
            } else {
                libc::AF_INET6 as u8
            },
            dst: (dst_len > 0).then_some(dst),
            dst_len,
            gateway: r.gateway.as_deref().and_then(|g| g.parse().ok()),
            prefsrc: r.source.as_deref().and_then(|g| g.parse().ok()),
            oif,
            priority: r.metric,
            table: netlink::RT_TABLE_MAIN as u32,
            protocol: netlink::RTPROT_STATIC,
            scope: r.scope,
            rtype: netlink::RTN_UNICAST,
            multipath: false,
        };
        match sock.add_route(&route) {
            Err(e) if e.raw_os_error() != Some(libc::EEXIST) => {
                return Err(io(&format!("route {} on {}", r.destination, r.device), e))
            }
            _ => {}
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net() -> Network {
        Network {
            interfaces: vec![NetInterface {
                name: "eth0".into(),
                mac: "02:00:00:00:00:01".into(),
                mtu: 1500,
                addresses: vec!["10.1.0.2/24".into(), "fd00::2/64".into()],
            }],
            routes: vec![NetRoute {
                destination: "0.0.0.0/0".into(),
                gateway: Some("10.1.0.1".into()),
                source: None,
                device: "eth0".into(),
                metric: None,
                scope: 0,
            }],
        }
    }

    #[test]
    fn what_the_guest_is_given_is_checked() {
        assert_eq!(validate(&net()), Ok(()));
        let mut n = net();
        n.interfaces[0].name = "a/b".into();
        assert!(validate(&n).is_err());
        let mut n = net();
        n.interfaces[0].mtu = 10;
        assert!(validate(&n).is_err());
        let mut n = net();
        n.interfaces[0].addresses.push("10.0.0.1/33".into());
        assert!(validate(&n).is_err());
        let mut n = net();
        n.routes[0].device = "eth9".into();
        assert!(validate(&n).is_err());
        let mut n = net();
        n.interfaces[0].mac = "02:00:00:00:00".into();
        assert!(validate(&n).is_err());
        assert_eq!(parse_cidr("::/0"), Some(("::".parse().unwrap(), 0)));
    }

    #[test]
    fn host_networking_is_refused_naming_the_field() {
        let s: Spec = serde_json::from_value(serde_json::json!({"ociVersion": "1.2.0",
            "linux": {"namespaces": [{"type": "pid"}]}}))
        .unwrap();
        assert!(namespace_path(&s).unwrap_err().to_string().contains("linux.namespaces"));
        let s: Spec = serde_json::from_value(serde_json::json!({"ociVersion": "1.2.0",
            "linux": {"namespaces": [{"type": "network", "path": "/run/netns/x"}]}}))
        .unwrap();
        assert_eq!(namespace_path(&s).unwrap(), Some("/run/netns/x".into()));
    }
}
