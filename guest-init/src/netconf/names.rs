//! Interface names: the renames that give each of our interfaces its target name when names
//! move between them (after a reconnect the slots may swap `eth0` and `eth1`), and the neutral
//! name of a slot the spec does not wire.

/// One of our interfaces as the rename plan sees it.
#[derive(Debug, Clone, Copy)]
pub struct Naming<'a> {
    /// Its index.
    pub index: u32,
    /// Its name now.
    pub current: &'a str,
    /// The name it must have (unique among ours).
    pub target: &'a str,
}

/// The renames, in order, as (interface index, new name), that take every interface of
/// `ours` to its target without two interfaces ever sharing a name: first each one holding
/// another's target moves to a temporary name, then each takes its target. `others` are
/// the names of interfaces that are not ours.
pub fn plan(ours: &[Naming], others: &[&str]) -> Vec<(u32, String)> {
    let mut names: Vec<String> = ours.iter().map(|n| n.current.to_owned()).collect();
    let mut steps = Vec::new();
    for (i, n) in ours.iter().enumerate() {
        let in_the_way = ours
            .iter()
            .enumerate()
            .any(|(j, o)| j != i && o.target == n.current);
        if in_the_way {
            let taken = |c: &str| {
                ours.iter().any(|o| o.target == c)
                    || names.iter().any(|x| x == c)
                    || others.contains(&c)
            };
            let bound = 2 * ours.len() + others.len();
            let temp = free_name(&format!("rvm-tmp{i}"), taken, bound);
            names[i] = temp.clone();
            steps.push((n.index, temp));
        }
    }
    for (i, n) in ours.iter().enumerate() {
        if names[i] != n.target {
            names[i] = n.target.to_owned();
            steps.push((n.index, n.target.to_owned()));
        }
    }
    steps
}

/// The name of the interface of unwired slot `slot`: `net<slot>`, or `net<slot>-<k>` if a
/// name in `avoid` (wanted by the spec, or another interface's) is that.
pub fn neutral(slot: u32, avoid: &[&str]) -> String {
    free_name(&format!("net{slot}"), |c| avoid.contains(&c), avoid.len())
}

/// `base`, or the first `base-<k>` (k from 1) not `taken`; with at most `bound` names taken
/// one of the first `bound + 1` candidates is free.
fn free_name(base: &str, taken: impl Fn(&str) -> bool, bound: usize) -> String {
    let mut candidate = base.to_owned();
    for k in 1..=bound {
        if !taken(&candidate) {
            break;
        }
        candidate = format!("{base}-{k}");
    }
    candidate
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    /// Runs `steps` on the names of `ours` and `others`, checking no name is ever held twice;
    /// returns the final names of ours.
    fn run(ours: &[Naming], others: &[&str], steps: &[(u32, String)]) -> Vec<String> {
        let mut names: HashMap<u32, String> = ours
            .iter()
            .map(|n| (n.index, n.current.to_owned()))
            .collect();
        for (index, name) in steps {
            assert!(
                !names.values().any(|n| n == name) && !others.contains(&name.as_str()),
                "{name} is taken at step {index}"
            );
            assert!(name.len() <= 15);
            names.insert(*index, name.clone());
        }
        ours.iter().map(|n| names[&n.index].clone()).collect()
    }

    fn naming<'a>(index: u32, current: &'a str, target: &'a str) -> Naming<'a> {
        Naming {
            index,
            current,
            target,
        }
    }

    #[test]
    fn nothing_to_do_when_names_are_right() {
        let ours = [naming(2, "eth0", "eth0"), naming(3, "eth1", "eth1")];
        assert!(plan(&ours, &["lo"]).is_empty());
    }

    #[test]
    fn swapped_names_go_through_temporary_ones() {
        let ours = [naming(2, "eth1", "eth0"), naming(3, "eth0", "eth1")];
        let steps = plan(&ours, &["lo"]);
        assert_eq!(steps.len(), 4);
        assert_eq!(run(&ours, &["lo"], &steps), ["eth0", "eth1"]);
    }

    #[test]
    fn chains_and_fresh_names_work_out() {
        let ours = [
            naming(2, "eth0", "eth1"),
            naming(3, "eth1", "eth2"),
            naming(4, "eth2", "net2"),
            naming(5, "eth3", "lan"),
        ];
        let others = ["lo", "rvm-tmp1"];
        let steps = plan(&ours, &others);
        assert_eq!(run(&ours, &others, &steps), ["eth1", "eth2", "net2", "lan"]);
        // eth3 -> lan needs no detour.
        assert!(steps.contains(&(5, "lan".to_owned())));
        assert_eq!(steps.iter().filter(|s| s.0 == 5).count(), 1);
    }

    #[test]
    fn neutral_names_avoid_wanted_ones() {
        assert_eq!(neutral(1, &["eth0"]), "net1");
        assert_eq!(neutral(1, &["net1", "net1-1"]), "net1-2");
    }
}
