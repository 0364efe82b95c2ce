//! The cgroup commands of the runtime: `update`, `pause`, `resume`, `ps` and `events`.

use super::{freeze, resources, stats, Cgroup};
use crate::container::Runtime;
use crate::state::{Record, Status};
use crate::{bail, err, Result};
use oci_spec::runtime::{Linux, LinuxResources};
use serde_json::Value;
use std::time::{Duration, Instant};

/// `update`'s flags (runc's), each overriding the same field of `--resources`.
#[derive(Default)]
pub struct UpdateFlags {
    pub memory: Option<String>,
    pub memory_swap: Option<String>,
    pub memory_reservation: Option<String>,
    pub cpu_shares: Option<String>,
    pub cpu_period: Option<String>,
    pub cpu_quota: Option<String>,
    pub cpu_rt_period: Option<String>,
    pub cpu_rt_runtime: Option<String>,
    pub cpuset_cpus: Option<String>,
    pub cpuset_mems: Option<String>,
    pub pids_limit: Option<String>,
    pub blkio_weight: Option<String>,
}

/// A size such as `64m`, `1G`, `1.5g`, `512KiB` or `1048576` (bytes); `-1` means unlimited. None
/// when it is not a size or is more bytes than a cgroup limit holds (2^63-1): never a saturated or
/// wrapped number, which the kernel would take as "no limit".
pub fn parse_size(s: &str) -> Option<i64> {
    let t = s.trim();
    if t == "-1" {
        return Some(-1);
    }
    let split = t.find(|c: char| !c.is_ascii_digit() && c != '.').unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let unit = unit.trim().to_ascii_lowercase();
    let unit = unit
        .strip_suffix("ib")
        .or_else(|| unit.strip_suffix('b'))
        .unwrap_or(&unit);
    let shift = match unit {
        "" => 0,
        "k" => 10,
        "m" => 20,
        "g" => 30,
        "t" => 40,
        "p" => 50,
        _ => return None,
    };
    if num.contains('.') {
        let n: f64 = num.parse().ok()?;
        let bytes = n * (1u64 << shift) as f64;
        // i64::MAX as f64 rounds up to 2^63: anything at or above it does not fit.
        if !bytes.is_finite() || bytes >= i64::MAX as f64 {
            return None;
        }
        return Some(bytes as i64);
    }
    let n: i64 = num.parse().ok()?;
    n.checked_mul(1i64 << shift)
}
/// The resources for `update`: the `--resources` JSON (if any) with the flags laid over it.
pub fn update_resources(json: Option<&[u8]>, f: &UpdateFlags) -> Result<LinuxResources> {
    let mut v: Value = match json {
        Some(t) => serde_json::from_slice(t).map_err(|e| err!("--resources: invalid JSON: {e}"))?,
        None => Value::Object(Default::default()),
    };
    if !v.is_object() {
        bail!("--resources: must be a JSON object (LinuxResources)");
    }
    drop_unset(&mut v);
    let mut set = |flag: &str, path: &[&str], val: &Option<String>, kind: char| -> Result<()> {
        let Some(raw) = val else { return Ok(()) };
        let parsed: Value = match kind {
            's' => parse_size(raw).map(Value::from).ok_or_else(|| {
                err!("--{flag}: {raw:?} is not a size (bytes with an optional k/m/g/t/p unit, at most 2^63-1 bytes, or -1)")
            })?,
            'i' => raw.trim().parse::<i64>().map(Value::from).map_err(|e| {
                err!("--{flag}: {raw:?} is not an integer from -2^63 to 2^63-1 ({e})")
            })?,
            'u' => raw.trim().parse::<u64>().map(Value::from).map_err(|e| {
                err!("--{flag}: {raw:?} is not an integer from 0 to 2^64-1 ({e})")
            })?,
            _ => Value::from(raw.as_str()),
        };
        let mut cur = &mut v;
        for (i, k) in path.iter().enumerate() {
            let obj = cur
                .as_object_mut()
                .ok_or_else(|| err!("--resources: {} is not an object", path[..i].join(".")))?;
            cur = if i + 1 == path.len() {
                obj.insert((*k).to_string(), parsed.clone());
                break;
            } else {
                obj.entry((*k).to_string())
                    .or_insert_with(|| Value::Object(Default::default()))
            };
        }
        Ok(())
    };
    set("memory", &["memory", "limit"], &f.memory, 's')?;
    set("memory-swap", &["memory", "swap"], &f.memory_swap, 's')?;
    set(
        "memory-reservation",
        &["memory", "reservation"],
        &f.memory_reservation,
        's',
    )?;
    set("cpu-shares", &["cpu", "shares"], &f.cpu_shares, 'u')?;
    set("cpu-period", &["cpu", "period"], &f.cpu_period, 'u')?;
    set("cpu-quota", &["cpu", "quota"], &f.cpu_quota, 'i')?;
    set("cpu-rt-period", &["cpu", "realtimePeriod"], &f.cpu_rt_period, 'u')?;
    set("cpu-rt-runtime", &["cpu", "realtimeRuntime"], &f.cpu_rt_runtime, 'i')?;
    set("cpuset-cpus", &["cpu", "cpus"], &f.cpuset_cpus, 't')?;
    set("cpuset-mems", &["cpu", "mems"], &f.cpuset_mems, 't')?;
    set("pids-limit", &["pids", "limit"], &f.pids_limit, 'i')?;
    set("blkio-weight", &["blockIO", "weight"], &f.blkio_weight, 'u')?;
    serde_path_to_error::deserialize(v).map_err(|e| {
        let path = e.path().to_string();
        err!("linux.resources.{path}: {}", e.into_inner())
    })
}

/// Engines send a whole LinuxResources to `update` with zeros (and empty strings) for what they do not
/// set, e.g. docker's `"cpu": {"period": 0, "quota": 0, "cpus": ""}`; runc leaves those alone, and so
/// do we (a zero cpu period cannot even be written).
fn drop_unset(v: &mut Value) {
    const UNSET_WHEN_ZERO: &[(&str, &[&str])] = &[
        ("memory", &["limit", "reservation", "swap", "kernel", "kernelTCP"]),
        (
            "cpu",
            &[
                "shares",
                "quota",
                "period",
                "realtimeRuntime",
                "realtimePeriod",
                "cpus",
                "mems",
            ],
        ),
        ("pids", &["limit"]),
        ("blockIO", &["weight", "leafWeight"]),
    ];
    for (section, keys) in UNSET_WHEN_ZERO {
        if let Some(obj) = v.get_mut(*section).and_then(Value::as_object_mut) {
            obj.retain(|k, val| !(keys.contains(&k.as_str()) && (val == &Value::from(0) || val == &Value::from(""))));
            // (pids.limit is required in the spec: an emptied section goes as a whole)
            if obj.is_empty() {
                v.as_object_mut().map(|o| o.remove(*section));
            }
        }
    }
}

impl Runtime {
    fn live(&self, id: &str) -> Result<(Record, Status)> {
        let locked = self.store.peek(id)?;
        let rec = locked
            .load()?
            .ok_or_else(|| err!("container {id:?} is still being created"))?;
        let st = locked.status(Some(&rec));
        Ok((rec, st))
    }

    /// `update`: apply new resource limits to a live container's cgroup.
    pub fn update(&self, id: &str, r: LinuxResources) -> Result<()> {
        let (rec, st) = self.live(id)?;
        if st == Status::Stopped {
            bail!("container {id:?} is not running (stopped)");
        }
        let r = crate::vm::confine::host_update(&self.store.root().join(id), r)?;
        let cg = Cgroup::open(&rec.cgroup_path);
        if rec.systemd_scope {
            // systemd keeps the unit's properties and writes them again on a daemon-reload:
            // they change first, then the files (as runc).
            super::systemd::set_props(&rec.cgroup_path, &super::systemd::resource_props(&r)?)?;
        }
        let mut linux = Linux::default();
        linux.set_resources(Some(r));
        let settings = resources::plan(&cg, &linux, resources::Mode::Update)?;
        resources::apply(&cg, &settings)
    }

    /// `pause`: freeze every process of a running container.
    pub fn pause(&self, id: &str) -> Result<()> {
        let (rec, st) = self.live(id)?;
        match st {
            Status::Running | Status::Created => {}
            s => bail!("container {id:?} cannot be paused: it is {}", s.as_str()),
        }
        crate::vm::pod::member_freeze(&self.store.root().join(id), true)?;
        freeze::freeze(&Cgroup::open(&rec.cgroup_path))
    }

    /// `resume`: thaw a paused container.
    pub fn resume(&self, id: &str) -> Result<()> {
        let (rec, st) = self.live(id)?;
        if st != Status::Paused {
            bail!("container {id:?} cannot be resumed: it is {}, not paused", st.as_str());
        }
        freeze::thaw(&Cgroup::open(&rec.cgroup_path))?;
        crate::vm::pod::member_freeze(&self.store.root().join(id), false)?;
        Ok(())
    }

    /// The host pids of every process in the container's cgroup.
    pub fn pids(&self, id: &str) -> Result<Vec<i32>> {
        let (rec, st) = self.live(id)?;
        if st == Status::Stopped {
            bail!("container {id:?} is not running (stopped)");
        }
        Ok(Cgroup::open(&rec.cgroup_path).procs())
    }

    /// `ps` table: the host's `ps` (default `-ef`) filtered to the container's processes.
    pub fn ps_table(&self, id: &str, args: &[String]) -> Result<String> {
        let pids = self.pids(id)?;
        let args: Vec<String> = if args.is_empty() {
            vec!["-ef".into()]
        } else {
            args.to_vec()
        };
        let out = std::process::Command::new("ps")
            .args(&args)
            .stdin(std::process::Stdio::null())
            .stderr(std::process::Stdio::inherit())
            .output()
            .map_err(|e| crate::Error::sys("ps", e))?;
        if !out.status.success() {
            bail!("ps {}: {}", args.join(" "), out.status);
        }
        let text = String::from_utf8_lossy(&out.stdout);
        let mut lines = text.lines();
        let header = lines.next().unwrap_or_default();
        let col = header
            .split_whitespace()
            .position(|c| c == "PID")
            .ok_or_else(|| err!("ps {}: no PID column in its output", args.join(" ")))?;
        let mut res = vec![header.to_string()];
        for l in lines {
            let pid = l.split_whitespace().nth(col).and_then(|p| p.parse::<i32>().ok());
            if pid.is_some_and(|p| pids.contains(&p)) {
                res.push(l.to_string());
            }
        }
        Ok(res.join("\n"))
    }

    /// `events`: with `once`, one stats document; otherwise stats every `interval` and an `oom`
    /// event as each OOM kill happens, until the container stops. Each line goes to `out`.
    pub fn events(&self, id: &str, once: bool, interval: Duration, out: &mut dyn FnMut(&str)) -> Result<()> {
        let (rec, st) = self.live(id)?;
        if st == Status::Stopped {
            bail!("container {id:?} is not running (stopped)");
        }
        let cg = Cgroup::open(&rec.cgroup_path);
        // A pod's later VM container: its cgroup in the guest (its host cgroup holds its helper).
        let dir = self.store.root().join(id);
        let stats_line = |cg: &Cgroup| {
            let data = match crate::vm::pod::member_stats(&dir) {
                Some(Ok(v)) => v,
                Some(Err(e)) => {
                    crate::log::warn(&format!("container {id:?}: {e}"));
                    stats::stats(cg)
                }
                None => stats::stats(cg),
            };
            serde_json::json!({"type": "stats", "id": id, "data": data}).to_string()
        };
        if once {
            out(&stats_line(&cg));
            return Ok(());
        }
        let oom_line = serde_json::json!({"type": "oom", "id": id}).to_string();
        let mut oom = stats::OomWatch::new(&cg);
        let tick = interval.max(Duration::from_millis(10));
        let mut next = Instant::now() + tick;
        loop {
            let wait = next.saturating_duration_since(Instant::now());
            // Wake for the OOM eventfd (v1) or at least every 100 ms to notice the container ending.
            let ms = wait.min(Duration::from_millis(100)).as_millis() as i32;
            if let Some(fd) = oom.as_ref().and_then(|o| o.fd()) {
                let mut p = libc::pollfd {
                    fd,
                    events: libc::POLLIN,
                    revents: 0,
                };
                // SAFETY: p is a valid pollfd.
                unsafe { libc::poll(&mut p, 1, ms) };
            } else {
                std::thread::sleep(Duration::from_millis(ms.max(0) as u64));
            }
            if let Some(o) = oom.as_mut() {
                for _ in 0..o.take() {
                    out(&oom_line);
                }
            }
            if !crate::state::process_alive(rec.pid, rec.pid_start) {
                return Ok(());
            }
            if Instant::now() >= next {
                out(&stats_line(&cg));
                next += tick;
            }
        }
    }
}

/// A duration such as `5s`, `500ms`, `1m` or `2` (seconds).
pub fn parse_duration(s: &str) -> Option<Duration> {
    let t = s.trim();
    let split = t.find(|c: char| !c.is_ascii_digit() && c != '.').unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: f64 = num.parse().ok()?;
    let secs = match unit {
        "" | "s" => n,
        "ms" => n / 1000.0,
        "m" => n * 60.0,
        "h" => n * 3600.0,
        _ => return None,
    };
    // try_from: a number too large for a Duration is an error, not a panic.
    Duration::try_from_secs_f64(secs).ok().filter(|_| secs > 0.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_and_durations() {
        assert_eq!(parse_size("64m"), Some(64 << 20));
        assert_eq!(parse_size("64MB"), Some(64 << 20));
        assert_eq!(parse_size("1g"), Some(1 << 30));
        assert_eq!(parse_size("512KiB"), Some(512 << 10));
        assert_eq!(parse_size("1000"), Some(1000));
        assert_eq!(parse_size("-1"), Some(-1));
        assert_eq!(parse_size("lots"), None);
        assert_eq!(parse_size("1.5k"), Some(1536));
        assert_eq!(parse_size("9223372036854775807"), Some(i64::MAX));
        for huge in [
            "99999999999999999999999",
            "9223372036854775808",
            "8589934592g",
            "9e99",
            "8192p",
            "99999999999999999999.5",
        ] {
            assert_eq!(parse_size(huge), None, "{huge}");
        }
        assert_eq!(parse_duration("5s"), Some(Duration::from_secs(5)));
        assert_eq!(parse_duration("200ms"), Some(Duration::from_millis(200)));
        assert_eq!(parse_duration("0"), None);
        assert_eq!(parse_duration("99999999999999999999999999999999h"), None);
    }

    #[test]
    fn zeros_an_engine_sends_to_update_are_left_unset() {
        // docker update --memory: the whole LinuxResources, zeros for everything else
        let r = update_resources(
            Some(
                br#"{"memory": {"limit": 134217728, "reservation": 0, "swap": 0, "kernel": 0},
                     "cpu": {"shares": 0, "quota": 0, "period": 0, "realtimeRuntime": 0, "realtimePeriod": 0,
                             "cpus": "", "mems": ""},
                     "pids": {"limit": 0}, "blockIO": {"weight": 0}}"#,
            ),
            &UpdateFlags::default(),
        )
        .unwrap();
        let m = r.memory().as_ref().unwrap();
        assert_eq!((m.limit(), m.reservation(), m.swap()), (Some(134217728), None, None));
        let c = r.cpu().as_ref();
        assert!(c.is_none_or(|c| c.period().is_none() && c.quota().is_none() && c.cpus().is_none()));
        assert!(r.pids().is_none());
    }

    #[test]
    fn flags_override_resources_json() {
        let f = UpdateFlags {
            memory: Some("32m".into()),
            pids_limit: Some("10".into()),
            cpu_quota: Some("-1".into()),
            ..Default::default()
        };
        let r = update_resources(
            Some(br#"{"memory": {"limit": 1, "swap": 99999999}, "cpu": {"shares": 512}}"#),
            &f,
        )
        .unwrap();
        let m = r.memory().as_ref().unwrap();
        assert_eq!(m.limit(), Some(32 << 20));
        assert_eq!(m.swap(), Some(99_999_999));
        assert_eq!(r.pids().as_ref().unwrap().limit(), 10);
        assert_eq!(r.cpu().as_ref().unwrap().shares(), Some(512));
        assert_eq!(r.cpu().as_ref().unwrap().quota(), Some(-1));
        let e = update_resources(Some(br#"{"memory": {"limit": "x"}}"#), &UpdateFlags::default()).unwrap_err();
        assert!(e.to_string().contains("linux.resources.memory.limit"), "{e}");
        let e = update_resources(
            None,
            &UpdateFlags {
                cpu_shares: Some("-5".into()),
                ..Default::default()
            },
        )
        .unwrap_err();
        assert!(e.to_string().contains("--cpu-shares"), "{e}");
    }
}
