//! A small synchronous rtnetlink client: the few route-netlink requests VM containers need
//! (vm/net.rs) — list links, addresses and routes; set a link up, its MTU and name; add an address
//! or a route; add and remove an ingress qdisc and a u32 "match everything" filter whose action
//! redirects to another device (mirred), the way a tap is coupled to a veth.
//!
//! Our own rather than a crate: these are a dozen fixed message layouts, the guest agent (static,
//! PID 1) uses the same code, and the create path must stay synchronous (the rtnetlink crate is
//! async; netlink-packet-route would add three crates for what fits here). Every wait on the
//! socket is bounded (a receive timeout): no reply from the kernel is an error, not a hang.

use std::io;
use std::net::IpAddr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

const NLMSG_ERROR: u16 = 2;
const NLMSG_DONE: u16 = 3;
const NLM_F_REQUEST: u16 = 0x1;
const NLM_F_ACK: u16 = 0x4;
const NLM_F_DUMP: u16 = 0x300;
const NLM_F_EXCL: u16 = 0x200;
const NLM_F_CREATE: u16 = 0x400;

const RTM_NEWLINK: u16 = 16;
const RTM_GETLINK: u16 = 18;
const RTM_NEWADDR: u16 = 20;
const RTM_GETADDR: u16 = 22;
const RTM_NEWROUTE: u16 = 24;
const RTM_GETROUTE: u16 = 26;
const RTM_NEWQDISC: u16 = 36;
const RTM_DELQDISC: u16 = 37;
const RTM_NEWTFILTER: u16 = 44;

const IFLA_ADDRESS: u16 = 1;
const IFLA_IFNAME: u16 = 3;
const IFLA_MTU: u16 = 4;
const IFA_ADDRESS: u16 = 1;
const IFA_LOCAL: u16 = 2;
const IFA_FLAGS: u16 = 8;
const RTA_DST: u16 = 1;
const RTA_OIF: u16 = 4;
const RTA_GATEWAY: u16 = 5;
const RTA_PRIORITY: u16 = 6;
const RTA_PREFSRC: u16 = 7;
const RTA_TABLE: u16 = 15;
const RTA_MULTIPATH: u16 = 9;

const TCA_KIND: u16 = 1;
const TCA_OPTIONS: u16 = 2;
const TCA_U32_SEL: u16 = 5;
const TCA_U32_ACT: u16 = 7;
const TCA_ACT_KIND: u16 = 1;
const TCA_ACT_OPTIONS: u16 = 2;
const TCA_MIRRED_PARMS: u16 = 2;
/// The ingress qdisc's parent and handle (`tc qdisc add dev X ingress`: handle ffff:).
const TC_H_INGRESS: u32 = 0xffff_fff1;
const INGRESS_HANDLE: u32 = 0xffff_0000;
const TC_U32_TERMINAL: u8 = 1;
const TC_ACT_STOLEN: i32 = 4;
const TCA_EGRESS_REDIR: i32 = 1;
const ETH_P_ALL: u16 = 0x0003;

/// The main routing table.
pub const RT_TABLE_MAIN: u8 = 254;
pub const RTN_UNICAST: u8 = 1;
/// A route's origin we give the routes we add (`proto static`).
pub const RTPROT_STATIC: u8 = 4;
pub const RTPROT_KERNEL: u8 = 2;
/// An address's scope: link (fe80::/10, 169.254/16 as the kernel makes them) and host.
pub const RT_SCOPE_LINK: u8 = 253;
pub const RT_SCOPE_HOST: u8 = 254;
/// IFA_F_NODAD: an IPv6 address usable at once (the host side already checked it is unique).
pub const IFA_F_NODAD: u32 = 0x02;

/// A network device.
#[derive(Debug, Clone)]
pub struct Link {
    pub index: i32,
    pub name: String,
    /// The hardware type (ARPHRD_*: 1 is Ethernet, 772 loopback).
    pub hw_type: u16,
    pub flags: u32,
    pub mac: Vec<u8>,
    pub mtu: u32,
}

/// An address of a device.
#[derive(Debug, Clone)]
pub struct Addr {
    pub index: i32,
    pub addr: IpAddr,
    pub prefix: u8,
    pub scope: u8,
}

/// A route (single path).
#[derive(Debug, Clone, PartialEq)]
pub struct Route {
    pub dst: Option<IpAddr>,
    pub dst_len: u8,
    pub gateway: Option<IpAddr>,
    pub oif: i32,
    pub priority: Option<u32>,
    pub prefsrc: Option<IpAddr>,
    pub table: u32,
    pub protocol: u8,
    pub scope: u8,
    pub rtype: u8,
    /// The family (AF_INET or AF_INET6).
    pub family: u8,
    /// A multipath route (not taken to the guest).
    pub multipath: bool,
}

/// A message under construction: the netlink header, a fixed part, attributes.
struct Msg {
    buf: Vec<u8>,
    nests: Vec<usize>,
}

impl Msg {
    fn new(ty: u16, flags: u16, fixed: &[u8]) -> Msg {
        let mut buf = vec![0u8; 16];
        buf[4..6].copy_from_slice(&ty.to_ne_bytes());
        buf[6..8].copy_from_slice(&(flags | NLM_F_REQUEST).to_ne_bytes());
        buf.extend_from_slice(fixed);
        pad(&mut buf);
        Msg { buf, nests: Vec::new() }
    }
    fn attr(&mut self, ty: u16, data: &[u8]) -> &mut Msg {
        let len = (4 + data.len()) as u16;
        self.buf.extend_from_slice(&len.to_ne_bytes());
        self.buf.extend_from_slice(&ty.to_ne_bytes());
        self.buf.extend_from_slice(data);
        pad(&mut self.buf);
        self
    }
    fn begin(&mut self, ty: u16) -> &mut Msg {
        self.nests.push(self.buf.len());
        self.buf.extend_from_slice(&[0, 0]);
        self.buf.extend_from_slice(&ty.to_ne_bytes());
        self
    }
    fn end(&mut self) -> &mut Msg {
        let at = self.nests.pop().expect("an open nest");
        let len = (self.buf.len() - at) as u16;
        self.buf[at..at + 2].copy_from_slice(&len.to_ne_bytes());
        self
    }
    fn finish(mut self, seq: u32) -> Vec<u8> {
        let len = self.buf.len() as u32;
        self.buf[0..4].copy_from_slice(&len.to_ne_bytes());
        self.buf[8..12].copy_from_slice(&seq.to_ne_bytes());
        self.buf
    }
}

fn pad(buf: &mut Vec<u8>) {
    while !buf.len().is_multiple_of(4) {
        buf.push(0);
    }
}

/// The attributes of a message body after its fixed part: (type without flags, payload).
fn attrs(body: &[u8]) -> Vec<(u16, &[u8])> {
    let mut out = Vec::new();
    let mut at = 0;
    while at + 4 <= body.len() {
        let len = u16::from_ne_bytes([body[at], body[at + 1]]) as usize;
        let ty = u16::from_ne_bytes([body[at + 2], body[at + 3]]) & 0x3fff;
        if len < 4 || at + len > body.len() {
            break;
        }
        out.push((ty, &body[at + 4..at + len]));
        at += (len + 3) & !3;
    }
    out
}

fn ip_bytes(a: &IpAddr) -> Vec<u8> {
    match a {
        IpAddr::V4(v) => v.octets().to_vec(),
        IpAddr::V6(v) => v.octets().to_vec(),
    }
}

fn family_of(a: &IpAddr) -> u8 {
    match a {
        IpAddr::V4(_) => libc::AF_INET as u8,
        IpAddr::V6(_) => libc::AF_INET6 as u8,
    }
}

fn ip_from(b: &[u8]) -> Option<IpAddr> {
    match b.len() {
        4 => Some(IpAddr::from(<[u8; 4]>::try_from(b).ok()?)),
        16 => Some(IpAddr::from(<[u8; 16]>::try_from(b).ok()?)),
        _ => None,
    }
}

fn u32_of(b: &[u8]) -> Option<u32> {
    Some(u32::from_ne_bytes(b.get(..4)?.try_into().ok()?))
}

/// A route-netlink socket of the calling thread's network namespace.
pub struct Socket {
    fd: OwnedFd,
    seq: u32,
}

impl Socket {
    pub fn open() -> io::Result<Socket> {
        // SAFETY: socket(2) with constant arguments; the descriptor is owned below.
        let raw = unsafe {
            libc::socket(
                libc::AF_NETLINK,
                libc::SOCK_RAW | libc::SOCK_CLOEXEC,
                libc::NETLINK_ROUTE,
            )
        };
        if raw < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: a fresh descriptor.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        let tv = libc::timeval { tv_sec: 5, tv_usec: 0 };
        // SAFETY: setsockopt with a timeval that outlives the call.
        unsafe {
            libc::setsockopt(
                fd.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_RCVTIMEO,
                (&tv as *const libc::timeval).cast(),
                std::mem::size_of::<libc::timeval>() as u32,
            )
        };
        Ok(Socket { fd, seq: 1 })
    }

    fn send(&mut self, m: Msg) -> io::Result<u32> {
        self.seq += 1;
        let seq = self.seq;
        let buf = m.finish(seq);
        // SAFETY: sockaddr_nl zeroed is the kernel's address; the buffer outlives the call.
        let n = unsafe {
            let mut sa: libc::sockaddr_nl = std::mem::zeroed();
            sa.nl_family = libc::AF_NETLINK as u16;
            libc::sendto(
                self.fd.as_raw_fd(),
                buf.as_ptr().cast(),
                buf.len(),
                0,
                (&sa as *const libc::sockaddr_nl).cast(),
                std::mem::size_of::<libc::sockaddr_nl>() as u32,
            )
        };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(seq)
    }

    /// Read replies to `seq` until its ack (or the end of a dump); `each` gets (type, body).
    fn replies(&mut self, seq: u32, mut each: impl FnMut(u16, &[u8])) -> io::Result<()> {
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            // SAFETY: recv into our buffer.
            let n = unsafe { libc::recv(self.fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
            if n < 0 {
                let e = io::Error::last_os_error();
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                if e.kind() == io::ErrorKind::WouldBlock {
                    return Err(io::Error::new(
                        io::ErrorKind::TimedOut,
                        "no answer from the kernel (netlink)",
                    ));
                }
                return Err(e);
            }
            let mut at = 0;
            let n = n as usize;
            while at + 16 <= n {
                let len = u32::from_ne_bytes(buf[at..at + 4].try_into().unwrap()) as usize;
                let ty = u16::from_ne_bytes([buf[at + 4], buf[at + 5]]);
                let mseq = u32::from_ne_bytes(buf[at + 8..at + 12].try_into().unwrap());
                if len < 16 || at + len > n {
                    break;
                }
                let body = &buf[at + 16..at + len];
                at += (len + 3) & !3;
                if mseq != seq {
                    continue;
                }
                match ty {
                    NLMSG_DONE => return Ok(()),
                    NLMSG_ERROR => {
                        let code = body.get(..4).map_or(0, |b| i32::from_ne_bytes(b.try_into().unwrap()));
                        return if code == 0 {
                            Ok(())
                        } else {
                            Err(io::Error::from_raw_os_error(-code))
                        };
                    }
                    _ => each(ty, body),
                }
            }
        }
    }

    fn call(&mut self, m: Msg) -> io::Result<()> {
        let seq = self.send(m)?;
        self.replies(seq, |_, _| {})
    }

    fn dump(&mut self, ty: u16, fixed: &[u8], mut each: impl FnMut(&[u8])) -> io::Result<()> {
        let seq = self.send(Msg::new(ty, NLM_F_DUMP, fixed))?;
        self.replies(seq, |_, body| each(body))
    }

    pub fn links(&mut self) -> io::Result<Vec<Link>> {
        let mut out = Vec::new();
        self.dump(RTM_GETLINK, &[0u8; 16], |b| {
            if b.len() < 16 {
                return;
            }
            let mut l = Link {
                index: i32::from_ne_bytes(b[4..8].try_into().unwrap()),
                hw_type: u16::from_ne_bytes([b[2], b[3]]),
                flags: u32::from_ne_bytes(b[8..12].try_into().unwrap()),
                name: String::new(),
                mac: Vec::new(),
                mtu: 0,
            };
            for (ty, v) in attrs(&b[16..]) {
                match ty {
                    IFLA_IFNAME => l.name = String::from_utf8_lossy(v.split(|&c| c == 0).next().unwrap_or(&[])).into(),
                    IFLA_ADDRESS => l.mac = v.to_vec(),
                    IFLA_MTU => l.mtu = u32_of(v).unwrap_or(0),
                    _ => {}
                }
            }
            out.push(l);
        })?;
        Ok(out)
    }

    pub fn addresses(&mut self) -> io::Result<Vec<Addr>> {
        let mut out = Vec::new();
        self.dump(RTM_GETADDR, &[0u8; 8], |b| {
            if b.len() < 8 {
                return;
            }
            let (prefix, scope) = (b[1], b[3]);
            let index = u32::from_ne_bytes(b[4..8].try_into().unwrap()) as i32;
            let (mut local, mut address) = (None, None);
            for (ty, v) in attrs(&b[8..]) {
                match ty {
                    IFA_LOCAL => local = ip_from(v),
                    IFA_ADDRESS => address = ip_from(v),
                    _ => {}
                }
            }
            // IFA_LOCAL is the address itself (IFA_ADDRESS the peer's on a point-to-point link).
            if let Some(addr) = local.or(address) {
                out.push(Addr {
                    index,
                    addr,
                    prefix,
                    scope,
                });
            }
        })?;
        Ok(out)
    }

    pub fn routes(&mut self) -> io::Result<Vec<Route>> {
        let mut out = Vec::new();
        self.dump(RTM_GETROUTE, &[0u8; 12], |b| {
            if b.len() < 12 {
                return;
            }
            let mut r = Route {
                family: b[0],
                dst_len: b[1],
                table: b[4] as u32,
                protocol: b[5],
                scope: b[6],
                rtype: b[7],
                dst: None,
                gateway: None,
                oif: 0,
                priority: None,
                prefsrc: None,
                multipath: false,
            };
            for (ty, v) in attrs(&b[12..]) {
                match ty {
                    RTA_DST => r.dst = ip_from(v),
                    RTA_GATEWAY => r.gateway = ip_from(v),
                    RTA_OIF => r.oif = u32_of(v).unwrap_or(0) as i32,
                    RTA_PRIORITY => r.priority = u32_of(v),
                    RTA_PREFSRC => r.prefsrc = ip_from(v),
                    RTA_TABLE => r.table = u32_of(v).unwrap_or(r.table),
                    RTA_MULTIPATH => r.multipath = true,
                    _ => {}
                }
            }
            out.push(r);
        })?;
        Ok(out)
    }

    /// Set a link's state, MTU and name (a rename needs the link down).
    pub fn set_link(&mut self, index: i32, up: Option<bool>, mtu: Option<u32>, name: Option<&str>) -> io::Result<()> {
        let mut fixed = [0u8; 16];
        fixed[4..8].copy_from_slice(&index.to_ne_bytes());
        if let Some(up) = up {
            let f = libc::IFF_UP as u32;
            fixed[8..12].copy_from_slice(&(if up { f } else { 0 }).to_ne_bytes());
            fixed[12..16].copy_from_slice(&f.to_ne_bytes());
        }
        let mut m = Msg::new(RTM_NEWLINK, NLM_F_ACK, &fixed);
        if let Some(mtu) = mtu {
            m.attr(IFLA_MTU, &mtu.to_ne_bytes());
        }
        if let Some(n) = name {
            let mut v = n.as_bytes().to_vec();
            v.push(0);
            m.attr(IFLA_IFNAME, &v);
        }
        self.call(m)
    }

    pub fn add_address(&mut self, index: i32, addr: IpAddr, prefix: u8, flags: u32) -> io::Result<()> {
        let mut fixed = [0u8; 8];
        fixed[0] = family_of(&addr);
        fixed[1] = prefix;
        fixed[4..8].copy_from_slice(&(index as u32).to_ne_bytes());
        let mut m = Msg::new(RTM_NEWADDR, NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL, &fixed);
        let b = ip_bytes(&addr);
        if addr.is_ipv4() {
            m.attr(IFA_LOCAL, &b);
        }
        m.attr(IFA_ADDRESS, &b);
        if flags != 0 {
            m.attr(IFA_FLAGS, &flags.to_ne_bytes());
        }
        self.call(m)
    }

    /// Add a route to the main table (its `table` and `protocol` are not used).
    pub fn add_route(&mut self, r: &Route) -> io::Result<()> {
        let fixed = [
            r.family,
            r.dst_len,
            0,
            0,
            RT_TABLE_MAIN,
            RTPROT_STATIC,
            r.scope,
            RTN_UNICAST,
            0,
            0,
            0,
            0,
        ];
        let mut m = Msg::new(RTM_NEWROUTE, NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL, &fixed);
        if let Some(d) = &r.dst {
            m.attr(RTA_DST, &ip_bytes(d));
        }
        if let Some(g) = &r.gateway {
            m.attr(RTA_GATEWAY, &ip_bytes(g));
        }
        if let Some(s) = &r.prefsrc {
            m.attr(RTA_PREFSRC, &ip_bytes(s));
        }
        if let Some(p) = r.priority {
            m.attr(RTA_PRIORITY, &p.to_ne_bytes());
        }
        m.attr(RTA_OIF, &(r.oif as u32).to_ne_bytes());
        self.call(m)
    }

    fn tcmsg(index: i32, handle: u32, parent: u32, info: u32) -> [u8; 20] {
        let mut t = [0u8; 20];
        t[4..8].copy_from_slice(&index.to_ne_bytes());
        t[8..12].copy_from_slice(&handle.to_ne_bytes());
        t[12..16].copy_from_slice(&parent.to_ne_bytes());
        t[16..20].copy_from_slice(&info.to_ne_bytes());
        t
    }

    /// `tc qdisc add dev <index> ingress` (fails with EEXIST if the device has one).
    pub fn add_ingress_qdisc(&mut self, index: i32) -> io::Result<()> {
        let mut m = Msg::new(
            RTM_NEWQDISC,
            NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL,
            &Self::tcmsg(index, INGRESS_HANDLE, TC_H_INGRESS, 0),
        );
        m.attr(TCA_KIND, b"ingress\0");
        self.call(m)
    }

    /// `tc qdisc del dev <index> ingress` (its filters go with it).
    pub fn del_ingress_qdisc(&mut self, index: i32) -> io::Result<()> {
        let mut m = Msg::new(
            RTM_DELQDISC,
            NLM_F_ACK,
            &Self::tcmsg(index, INGRESS_HANDLE, TC_H_INGRESS, 0),
        );
        m.attr(TCA_KIND, b"ingress\0");
        self.call(m)
    }

    /// `tc filter add dev <from> parent ffff: protocol all u32 match u8 0 0 action mirred egress
    /// redirect dev <to>`: every frame that arrives on `from` leaves through `to`.
    pub fn add_redirect(&mut self, from: i32, to: i32) -> io::Result<()> {
        let prio: u32 = 1;
        let info = (prio << 16) | ETH_P_ALL.to_be() as u32;
        let mut m = Msg::new(
            RTM_NEWTFILTER,
            NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL,
            &Self::tcmsg(from, 0, INGRESS_HANDLE, info),
        );
        m.attr(TCA_KIND, b"u32\0");
        // struct tc_u32_sel: flags, offshift, nkeys, pad, offmask, off, offoff, hoff, hmask; then
        // one struct tc_u32_key {mask, val, off, offmask}, all zero: matches every frame.
        let mut sel = [0u8; 32];
        sel[0] = TC_U32_TERMINAL;
        sel[2] = 1;
        // struct tc_mirred: index, capab, action, refcnt, bindcnt, eaction, ifindex.
        let mut parms = [0u8; 28];
        parms[8..12].copy_from_slice(&TC_ACT_STOLEN.to_ne_bytes());
        parms[20..24].copy_from_slice(&TCA_EGRESS_REDIR.to_ne_bytes());
        parms[24..28].copy_from_slice(&(to as u32).to_ne_bytes());
        m.begin(TCA_OPTIONS)
            .attr(TCA_U32_SEL, &sel)
            .begin(TCA_U32_ACT)
            .begin(1)
            .attr(TCA_ACT_KIND, b"mirred\0")
            .begin(TCA_ACT_OPTIONS)
            .attr(TCA_MIRRED_PARMS, &parms)
            .end()
            .end()
            .end()
            .end();
        self.call(m)
    }
}

/// Make a tap device named `name` in the calling thread's network namespace and return its
/// descriptor (the device lives as long as the descriptor: no TUNSETPERSIST). With a virtio-net
/// header (IFF_VNET_HDR), so qemu can pass offloads through.
pub fn open_tap(name: &str) -> io::Result<OwnedFd> {
    const TUNSETIFF: libc::c_ulong = 0x4004_54ca;
    const IFF_TAP: libc::c_short = 0x0002;
    const IFF_NO_PI: libc::c_short = 0x1000;
    const IFF_VNET_HDR: libc::c_short = 0x4000;
    if name.is_empty() || name.len() >= libc::IFNAMSIZ {
        return Err(io::Error::new(io::ErrorKind::InvalidInput, "tap name too long"));
    }
    // SAFETY: open with a constant NUL-terminated path; the descriptor is owned below.
    let raw = unsafe { libc::open(c"/dev/net/tun".as_ptr(), libc::O_RDWR | libc::O_CLOEXEC) };
    if raw < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a fresh descriptor.
    let fd = unsafe { OwnedFd::from_raw_fd(raw) };
    #[repr(C)]
    struct IfReq {
        name: [u8; 16],
        flags: libc::c_short,
        _pad: [u8; 22],
    }
    let mut req = IfReq {
        name: [0; 16],
        flags: IFF_TAP | IFF_NO_PI | IFF_VNET_HDR,
        _pad: [0; 22],
    };
    req.name[..name.len()].copy_from_slice(name.as_bytes());
    // SAFETY: TUNSETIFF with a struct ifreq-sized buffer that outlives the call.
    if unsafe { libc::ioctl(fd.as_raw_fd(), TUNSETIFF, &mut req) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(fd)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attributes_round_trip_and_nest() {
        let mut m = Msg::new(RTM_NEWLINK, 0, &[0u8; 16]);
        m.attr(IFLA_MTU, &1400u32.to_ne_bytes())
            .begin(TCA_OPTIONS)
            .attr(1, b"abc")
            .end();
        let buf = m.finish(7);
        assert_eq!(u32::from_ne_bytes(buf[0..4].try_into().unwrap()) as usize, buf.len());
        let a = attrs(&buf[32..]);
        assert_eq!(a.len(), 2);
        assert_eq!(a[0], (IFLA_MTU, &1400u32.to_ne_bytes()[..]));
        assert_eq!(a[1].0, TCA_OPTIONS);
        let inner = attrs(a[1].1);
        assert_eq!(inner, vec![(1, &b"abc"[..])]);
    }

    #[test]
    fn truncated_attributes_are_ignored() {
        assert!(attrs(&[8, 0, 1, 0, 1, 2]).is_empty());
        assert!(attrs(&[2, 0, 1, 0]).is_empty());
    }
}
