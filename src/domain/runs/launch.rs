//! How a run's trainer is started: one process, or `processes` ranks under `mpirun` (rm, sft,
//! dpo and ppo train data-parallel), optionally on the `hosts` of a host list as mpirun's
//! `--host` takes it (`node1:2,node2:2`). The host list is checked here, once: host names and
//! slot counts only, so nothing a lead types reaches mpirun as an option or a shell word.

use serde_json::Value;

use super::Config;

/// Most entries in a host list, and most slots on one host.
const MAX_HOSTS: usize = 1024;
const MAX_SLOTS: u32 = 4096;

/// A host list for mpirun's `--host`: `name[:slots]` entries separated by commas. A name
/// without slots counts as one slot, as mpirun counts it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hosts(Vec<(String, u32)>);

impl Hosts {
    /// Host names (letters, digits, `-`, `.`, `_`; not starting with `-` or `.`) with optional
    /// slot counts from 1 to 4096; an error says what is wrong, without the field's name.
    pub fn parse(s: &str) -> Result<Self, String> {
        let s = s.trim();
        if s.is_empty() {
            return Err("a host list such as node1:2,node2:2, got an empty one".into());
        }
        let entries: Vec<&str> = s.split(',').map(str::trim).collect();
        if entries.len() > MAX_HOSTS {
            return Err(format!("at most {MAX_HOSTS} hosts, got {}", entries.len()));
        }
        entries.into_iter().map(entry).collect::<Result<Vec<_>, _>>().map(Self)
    }

    /// Slots over all hosts: the most processes the list holds.
    pub fn slots(&self) -> u64 {
        self.0.iter().map(|(_, n)| u64::from(*n)).sum()
    }

    /// The list as mpirun's `--host` takes it.
    pub fn as_arg(&self) -> String {
        let shown: Vec<String> = self.0.iter().map(|(h, n)| if *n == 1 { h.clone() } else { format!("{h}:{n}") }).collect();
        shown.join(",")
    }
}

fn entry(e: &str) -> Result<(String, u32), String> {
    let (name, slots) = match e.split_once(':') {
        Some((n, s)) => (n, Some(s)),
        None => (e, None),
    };
    let name_ok =
        (1..=253).contains(&name.len()) && !name.starts_with(['-', '.']) && name.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_'));
    if !name_ok {
        return Err(format!("host names of letters, digits, '-', '.' and '_' (optionally :slots), got {e:?}"));
    }
    let slots = match slots {
        None => 1,
        Some(t) => {
            t.parse::<u32>().ok().filter(|n| (1..=MAX_SLOTS).contains(n)).ok_or_else(|| format!("slots from 1 to {MAX_SLOTS} after {name}:, got {t:?}"))?
        }
    };
    Ok((name.to_string(), slots))
}

/// How many processes a run's trainer runs as, and where.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Launch {
    pub processes: u32,
    pub hosts: Option<Hosts>,
}

impl Launch {
    /// One process on the worker's machine.
    pub const SINGLE: Self = Self { processes: 1, hosts: None };

    /// The launch a resolved configuration asks for (one process where it says nothing: runs
    /// of kinds that do not train data-parallel, and runs stored before these settings).
    pub fn of(config: &Config) -> Result<Self, String> {
        let processes = match config.get("processes") {
            None | Some(Value::Null) => 1,
            Some(v) => v
                .as_u64()
                .and_then(|n| u32::try_from(n).ok())
                .filter(|n| *n >= 1)
                .ok_or_else(|| format!("config.processes: expected a whole number from 1, got {v}"))?,
        };
        let hosts = match config.get("hosts") {
            None | Some(Value::Null) => None,
            Some(Value::String(s)) => Some(Hosts::parse(s).map_err(|e| format!("config.hosts: expected {e}"))?),
            Some(v) => return Err(format!("config.hosts: expected a host list such as node1:2,node2:2, got {v}")),
        };
        if let Some(h) = &hosts {
            if u64::from(processes) > h.slots() {
                return Err(format!("config.hosts: {} slots for {processes} processes (give each host :slots, or fewer processes)", h.slots()));
            }
        }
        Ok(Self { processes, hosts })
    }

    /// Whether the trainer runs under mpirun (several processes, or any host list).
    pub fn uses_mpirun(&self) -> bool {
        self.processes > 1 || self.hosts.is_some()
    }

    /// mpirun's options before the trainer: the ranks, where they run, each output line tagged
    /// with its rank; on the worker's own machine as many ranks as asked (oversubscribed if
    /// need be), and never pinned to one core (each rank runs its own threads).
    pub fn mpirun_args(&self) -> Vec<String> {
        let mut args = vec!["-np".to_string(), self.processes.to_string()];
        match &self.hosts {
            Some(h) => args.extend(["--host".to_string(), h.as_arg()]),
            None => args.push("--oversubscribe".into()),
        }
        args.extend(["--bind-to", "none", "--tag-output"].map(String::from));
        args
    }

    /// "2 processes on node1:2,node2:2", "1 process".
    pub fn describe(&self) -> String {
        let n = match self.processes {
            1 => "1 process".to_string(),
            n => format!("{n} processes"),
        };
        match &self.hosts {
            Some(h) => format!("{n} on {}", h.as_arg()),
            None => n,
        }
    }
}

/// A line of a rank's output, or of mpirun's own.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Line {
    Rank { rank: u32, stdout: bool, text: String },
    Mpirun(String),
}

/// Puts the ranks' lines back together from `mpirun --tag-output`'s. mpirun tags each chunk
/// a rank writes (`[job,rank]<stdout>:` or `<stderr>:`), and a line written in several
/// pieces (Rust's unbuffered stderr writes each piece of a `format!`) arrives as several
/// tagged segments, interleaved with other ranks'; a physical line ends the line of its last
/// segment's rank and stream.
#[derive(Debug, Default)]
pub struct Untangler {
    partial: std::collections::BTreeMap<(u32, bool), String>,
}

/// Lines held per rank and stream at most, so a rank that never ends a line stays bounded.
const MAX_PARTIAL: usize = 16_384;

impl Untangler {
    /// The complete lines in one physical line of mpirun's output.
    pub fn push(&mut self, physical: &str) -> Vec<Line> {
        let segments = segments(physical);
        let Some(((rank, stdout), last)) = segments.last().copied() else { return vec![Line::Mpirun(physical.to_string())] };
        let mut out = Vec::new();
        for &(key, text) in &segments[..segments.len() - 1] {
            let buf = self.partial.entry(key).or_default();
            buf.push_str(text);
            if buf.len() > MAX_PARTIAL {
                out.push(Line::Rank { rank: key.0, stdout: key.1, text: std::mem::take(buf) });
            }
        }
        let mut text = self.partial.remove(&(rank, stdout)).unwrap_or_default();
        text.push_str(last);
        out.push(Line::Rank { rank, stdout, text });
        out
    }
}

/// The tagged segments of a physical line: (rank, stdout?) and text; none when it does not
/// start with a tag (a line of mpirun's own).
fn segments(line: &str) -> Vec<((u32, bool), &str)> {
    let mut found: Vec<(usize, usize, (u32, bool))> = Vec::new();
    let mut from = 0;
    while let Some(i) = line[from..].find('[').map(|i| i + from) {
        match tag_at(&line[i..]) {
            Some((len, key)) => {
                found.push((i, i + len, key));
                from = i + len;
            }
            None => from = i + 1,
        }
    }
    if found.first().is_none_or(|f| f.0 != 0) {
        return Vec::new();
    }
    (0..found.len()).map(|k| (found[k].2, &line[found[k].1..found.get(k + 1).map_or(line.len(), |n| n.0)])).collect()
}

/// A tag at the start of `s`: its length, rank and stream.
fn tag_at(s: &str) -> Option<(usize, (u32, bool))> {
    let close = s.find(']')?;
    let (job, rank) = s[1..close].split_once(',')?;
    if job.is_empty() || !job.bytes().all(|b| b.is_ascii_digit()) || rank.is_empty() || !rank.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let rest = &s[close + 1..];
    let stdout = match () {
        _ if rest.starts_with("<stdout>:") => true,
        _ if rest.starts_with("<stderr>:") => false,
        _ => return None,
    };
    Some((close + 1 + "<stdout>:".len(), (rank.parse().ok()?, stdout)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn launch(v: Value) -> Result<Launch, String> {
        Launch::of(v.as_object().unwrap())
    }

    #[test]
    fn a_host_list_is_names_and_slots_only() {
        let h = Hosts::parse("node1:2, node2:2,10.0.0.7").unwrap();
        assert_eq!((h.slots(), h.as_arg()), (5, "node1:2,node2:2,10.0.0.7".to_string()));
        for bad in ["", "-np 99", "--mca x", "a;rm -rf /", "a b", "node1:0", "node1:x", "node1:99999", "$(id)", "a,,b", ".x", "n\u{e9}ud", "a:1:2"] {
            assert!(Hosts::parse(bad).is_err(), "{bad:?} accepted");
        }
        assert!(Hosts::parse(&vec!["h"; 1025].join(",")).unwrap_err().contains("at most 1024 hosts"));
    }

    #[test]
    fn processes_and_hosts_become_mpirun_options() {
        assert_eq!(launch(json!({})).unwrap(), Launch::SINGLE);
        assert!(!Launch::SINGLE.uses_mpirun());
        let two = launch(json!({"processes": 2, "hosts": null})).unwrap();
        assert_eq!(two.mpirun_args(), ["-np", "2", "--oversubscribe", "--bind-to", "none", "--tag-output"]);
        assert_eq!(two.describe(), "2 processes");
        let remote = launch(json!({"processes": 4, "hosts": "node1:2,node2:2"})).unwrap();
        assert_eq!(remote.mpirun_args(), ["-np", "4", "--host", "node1:2,node2:2", "--bind-to", "none", "--tag-output"]);
        assert_eq!(remote.describe(), "4 processes on node1:2,node2:2");
        assert!(launch(json!({"processes": 1, "hosts": "gpu1"})).unwrap().uses_mpirun());
    }

    #[test]
    fn a_bad_launch_is_refused_naming_the_field() {
        assert_eq!(
            launch(json!({"processes": 3, "hosts": "a,b"})).unwrap_err(),
            "config.hosts: 2 slots for 3 processes (give each host :slots, or fewer processes)"
        );
        assert!(launch(json!({"processes": 0})).unwrap_err().starts_with("config.processes: expected a whole number"));
        assert!(launch(json!({"hosts": "a;b"})).unwrap_err().starts_with("config.hosts: expected host names"));
        assert!(launch(json!({"hosts": 3})).unwrap_err().starts_with("config.hosts: expected a host list"));
    }

    #[test]
    fn tagged_lines_name_their_rank_and_stream() {
        let mut u = Untangler::default();
        let rank = |rank: u32, stdout: bool, text: &str| Line::Rank { rank, stdout, text: text.into() };
        assert_eq!(u.push("[1,0]<stdout>:{\"event\":\"step\"}"), [rank(0, true, "{\"event\":\"step\"}")]);
        assert_eq!(u.push("[1,12]<stderr>: error: x"), [rank(12, false, " error: x")]);
        assert_eq!(u.push("mpirun noticed that process rank 1 exited"), [Line::Mpirun("mpirun noticed that process rank 1 exited".into())]);
        assert_eq!(u.push("[node1:123] warning"), [Line::Mpirun("[node1:123] warning".into())]);
    }

    #[test]
    fn a_line_written_in_pieces_and_interleaved_with_another_rank_s_is_put_back_together() {
        // As Open MPI 4 passed on two ranks' `eprintln!("reward model: {n} rankings")`.
        let mut u = Untangler::default();
        let rank = |rank: u32, text: &str| Line::Rank { rank, stdout: false, text: text.into() };
        assert_eq!(u.push("[1,1]<stderr>:reward model: [1,0]<stderr>:reward model: 34 rankings [x]"), [rank(0, "reward model: 34 rankings [x]")]);
        assert_eq!(u.push("[1,1]<stderr>:34[1,1]<stderr>: rankings[1,1]<stderr>:"), [rank(1, "reward model: 34 rankings")]);
        assert!(u.partial.is_empty());
    }
}
