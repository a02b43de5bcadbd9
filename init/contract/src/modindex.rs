//! The module index of a kernel release directory (`modules.dep`,
//! `modules.softdep`, `modules.alias`, as the initramfs carries them) and the
//! load order computed from it: every module after its dependencies and its
//! `softdep pre:` modules. Parsing never fails: malformed lines are skipped.

use std::collections::{BTreeMap, BTreeSet};

/// The module index of one kernel release directory.
#[derive(Debug, Default, Clone)]
pub struct Index {
    /// Module name → (relative file path, dependency names).
    deps: BTreeMap<String, (String, Vec<String>)>,
    /// Module name → names from `softdep <m> pre: ...`.
    pre: BTreeMap<String, Vec<String>>,
    /// Alias → module names.
    aliases: BTreeMap<String, Vec<String>>,
}

/// `kernel/fs/ext4/ext4.ko.xz` → `ext4`; dashes become underscores.
pub fn module_name(path: &str) -> String {
    let file = path.rsplit('/').next().unwrap_or(path);
    let stem = file.split(".ko").next().unwrap_or(file);
    stem.replace('-', "_")
}

impl Index {
    /// Parse the three index files (any may be empty).
    pub fn parse(dep: &str, softdep: &str, alias: &str) -> Index {
        let mut idx = Index::default();
        for line in dep.lines() {
            let Some((m, rest)) = line.split_once(':') else {
                continue;
            };
            let deps = rest.split_whitespace().map(module_name).collect();
            idx.deps
                .insert(module_name(m.trim()), (m.trim().to_string(), deps));
        }
        for line in softdep.lines() {
            let mut words = line.split_whitespace();
            if words.next() != Some("softdep") {
                continue;
            }
            let Some(m) = words.next() else { continue };
            let mut in_pre = false;
            for w in words {
                match w {
                    "pre:" => in_pre = true,
                    "post:" => in_pre = false,
                    w if in_pre => idx
                        .pre
                        .entry(m.replace('-', "_"))
                        .or_default()
                        .push(w.replace('-', "_")),
                    _ => {}
                }
            }
        }
        for line in alias.lines() {
            let mut words = line.split_whitespace();
            if let (Some("alias"), Some(a), Some(m)) = (words.next(), words.next(), words.next()) {
                idx.aliases
                    .entry(a.to_string())
                    .or_default()
                    .push(m.replace('-', "_"));
            }
        }
        idx
    }

    /// Whether the index carries a module of this name (a `modules.dep` line).
    pub fn carries(&self, name: &str) -> bool {
        self.deps.contains_key(name)
    }

    /// Every carried module as (name, file path relative to the release
    /// directory), sorted by name.
    pub fn modules(&self) -> impl Iterator<Item = (&str, &str)> {
        self.deps
            .iter()
            .map(|(name, (path, _))| (name.as_str(), path.as_str()))
    }

    /// Carried modules a name refers to: the module itself, else its aliases.
    pub fn resolve<'a>(&'a self, name: &str) -> Vec<&'a str> {
        if let Some((carried, _)) = self.deps.get_key_value(name) {
            return vec![carried.as_str()];
        }
        let aliased = self.aliases.get(name).into_iter().flatten();
        aliased
            .filter(|m| self.carries(m))
            .map(String::as_str)
            .collect()
    }

    /// What must load before `name`, in the order it is visited: the carried
    /// modules its `softdep pre:` entries resolve to, then its `modules.dep`
    /// dependencies (carried or not).
    pub fn prerequisites<'a>(&'a self, name: &str) -> Vec<&'a str> {
        let soft = self.pre.get(name).into_iter().flatten();
        let mut before: Vec<&str> = soft.flat_map(|s| self.resolve(s)).collect();
        if let Some((_, deps)) = self.deps.get(name) {
            before.extend(deps.iter().map(String::as_str));
        }
        before
    }

    /// Every carried module, each after its dependencies and softdeps, as file
    /// paths relative to the release directory. A depth-first post-order from
    /// each module in name order, with an explicit stack (a dependency chain
    /// as long as the input does not grow the call stack); a module already
    /// visited is skipped, so cycles terminate.
    pub fn load_order(&self) -> Vec<String> {
        let mut seen = BTreeSet::new();
        let mut order = Vec::new();
        for name in self.deps.keys() {
            self.visit(name, &mut seen, &mut order);
        }
        order
    }

    /// Post-order of the modules reachable from `root` and not yet `seen`.
    fn visit<'a>(&'a self, root: &'a str, seen: &mut BTreeSet<&'a str>, order: &mut Vec<String>) {
        let mut stack: Vec<Frame<'a>> = Vec::new();
        self.enter(root, seen, &mut stack);
        while let Some(frame) = stack.last_mut() {
            match frame.before.get(frame.next) {
                Some(&next) => {
                    frame.next += 1;
                    self.enter(next, seen, &mut stack);
                }
                None => {
                    order.push(frame.path.to_string());
                    stack.pop();
                }
            }
        }
    }

    /// Marks `name` seen and, when it is new and carried, pushes its frame.
    fn enter<'a>(
        &'a self,
        name: &'a str,
        seen: &mut BTreeSet<&'a str>,
        stack: &mut Vec<Frame<'a>>,
    ) {
        if !seen.insert(name) {
            return;
        }
        if let Some((path, _)) = self.deps.get(name) {
            stack.push(Frame {
                path,
                before: self.prerequisites(name),
                next: 0,
            });
        }
    }
}

/// A module being visited: its path, what loads before it, and how many of
/// those were visited.
struct Frame<'a> {
    path: &'a str,
    before: Vec<&'a str>,
    next: usize,
}

#[cfg(test)]
mod tests {
    use super::*;

    const DEP: &str = "\
kernel/fs/ext4/ext4.ko: kernel/fs/jbd2/jbd2.ko kernel/lib/crc16.ko kernel/fs/mbcache.ko
kernel/fs/jbd2/jbd2.ko:
kernel/lib/crc16.ko:
kernel/fs/mbcache.ko:
kernel/crypto/crc32c_generic.ko:
kernel/drivers/block/virtio_blk.ko: kernel/drivers/virtio/virtio_ring.ko kernel/drivers/virtio/virtio.ko
kernel/drivers/virtio/virtio.ko:
kernel/drivers/virtio/virtio_ring.ko: kernel/drivers/virtio/virtio.ko
";
    const SOFT: &str = "# comment\nsoftdep ext4 pre: crc32c post: foo\nsoftdep jbd2 pre: crc32c\n";
    const ALIAS: &str = "alias crypto-crc32c crc32c_generic\nalias crc32c crc32c_generic\n";

    fn pos(order: &[String], name: &str) -> usize {
        order
            .iter()
            .position(|p| module_name(p) == name)
            .unwrap_or_else(|| panic!("{name} not in {order:?}"))
    }

    #[test]
    fn dependencies_and_softdeps_come_first() {
        let order = Index::parse(DEP, SOFT, ALIAS).load_order();
        assert_eq!(order.len(), 8);
        for dep in ["jbd2", "crc16", "mbcache", "crc32c_generic"] {
            assert!(pos(&order, dep) < pos(&order, "ext4"), "{dep}: {order:?}");
        }
        assert!(pos(&order, "crc32c_generic") < pos(&order, "jbd2"));
        // modules.dep line order is not a load order: virtio before virtio_ring.
        assert!(pos(&order, "virtio") < pos(&order, "virtio_ring"));
        assert!(pos(&order, "virtio_ring") < pos(&order, "virtio_blk"));
    }

    #[test]
    fn names_normalise_and_missing_softdeps_are_ignored() {
        assert_eq!(
            module_name("kernel/x/vmw_vsock-virtio.ko.xz"),
            "vmw_vsock_virtio"
        );
        let idx = Index::parse("a.ko:\n", "softdep a pre: nothere\n", "");
        assert_eq!(idx.load_order(), vec!["a.ko".to_string()]);
    }

    #[test]
    fn cycles_terminate() {
        let idx = Index::parse("a.ko: b.ko\nb.ko: a.ko\n", "", "");
        assert_eq!(idx.load_order().len(), 2);
    }

    /// The exact orders the recursive version produced.
    #[test]
    fn order_is_a_post_order_in_name_order() {
        let order = Index::parse(DEP, SOFT, ALIAS).load_order();
        let names: Vec<String> = order.iter().map(|p| module_name(p)).collect();
        let want = [
            "crc16",
            "crc32c_generic",
            "jbd2",
            "mbcache",
            "ext4",
            "virtio",
            "virtio_ring",
            "virtio_blk",
        ];
        assert_eq!(names, want);
        let cyclic = Index::parse(
            "a.ko: b.ko c.ko\nb.ko: c.ko d.ko\nc.ko: a.ko\nd.ko:\ne.ko: d.ko\n",
            "softdep d pre: ali e\n",
            "alias ali c\nalias ali e\n",
        );
        assert_eq!(
            cyclic.load_order(),
            ["c.ko", "e.ko", "d.ko", "b.ko", "a.ko"]
        );
        assert_eq!(
            Index::parse("a.ko: b.ko\nb.ko: a.ko\n", "", "").load_order(),
            ["b.ko", "a.ko"]
        );
    }

    /// A 50,000-long chain `m0 -> m1 -> ... -> m49999` on a 256 KiB stack: one
    /// call frame per dependency would overflow it.
    #[test]
    fn a_long_dependency_chain_does_not_grow_the_stack() {
        const LEN: usize = 50_000;
        let dep: String = (0..LEN)
            .map(|i| match i + 1 {
                next if next < LEN => format!("m{i}.ko: m{next}.ko\n"),
                _ => format!("m{i}.ko:\n"),
            })
            .collect();
        let order = std::thread::Builder::new()
            .stack_size(256 << 10)
            .spawn(move || Index::parse(&dep, "", "").load_order())
            .unwrap()
            .join()
            .unwrap();
        let want: Vec<String> = (0..LEN).rev().map(|i| format!("m{i}.ko")).collect();
        assert_eq!(order, want);
    }

    #[test]
    fn prerequisites_resolve_softdeps_through_aliases() {
        let idx = Index::parse(DEP, SOFT, ALIAS);
        assert_eq!(
            idx.prerequisites("ext4"),
            ["crc32c_generic", "jbd2", "crc16", "mbcache"]
        );
        assert_eq!(idx.resolve("crypto-crc32c"), ["crc32c_generic"]);
        assert!(idx.resolve("nothere").is_empty());
        assert!(idx.carries("virtio") && !idx.carries("crc32c"));
        assert_eq!(idx.modules().count(), 8);
    }
}
