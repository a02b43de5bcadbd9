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

/// `-` → `_`, as module names are compared.
pub fn normalize(name: &str) -> String {
    name.replace('-', "_")
}

/// The path a module is carried at: compression suffixes removed.
pub fn uncompressed_path(path: &str) -> String {
    for ext in [".xz", ".zst", ".gz"] {
        if let Some(p) = path.strip_suffix(ext) {
            return p.to_string();
        }
    }
    path.to_string()
}

/// The module name of a `modules.dep` path (`kernel/fs/ext4/ext4.ko.xz` →
/// `ext4`): the file name without its compression suffix and `.ko`, `-`
/// turned to `_`.
pub fn module_name(path: &str) -> String {
    let base = uncompressed_path(path.rsplit('/').next().unwrap_or(path));
    normalize(base.strip_suffix(".ko").unwrap_or(&base))
}

/// One `modules.dep` line: the module's path and its dependencies' paths;
/// `None` for a line without `:`.
pub fn dep_line(line: &str) -> Option<(&str, Vec<&str>)> {
    let (path, deps) = line.split_once(':')?;
    Some((path.trim(), deps.split_whitespace().collect()))
}

/// One `softdep MODULE pre: A B post: C` line of `modules.softdep`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Softdep<'a> {
    /// The module the line is about.
    pub module: &'a str,
    /// Modules to load before it.
    pub pre: Vec<&'a str>,
    /// Modules to load after it.
    pub post: Vec<&'a str>,
}

/// One `modules.softdep` line, read as kmod reads it (words before `pre:`
/// or `post:` belong to neither); `None` unless it starts `softdep MODULE`.
pub fn softdep_line(line: &str) -> Option<Softdep<'_>> {
    let mut words = line.split_whitespace();
    if words.next() != Some("softdep") {
        return None;
    }
    let mut dep = Softdep {
        module: words.next()?,
        pre: Vec::new(),
        post: Vec::new(),
    };
    let mut list: Option<&mut Vec<&str>> = None;
    for w in words {
        match w {
            "pre:" => list = Some(&mut dep.pre),
            "post:" => list = Some(&mut dep.post),
            _ => {
                if let Some(l) = list.as_mut() {
                    l.push(w);
                }
            }
        }
    }
    Some(dep)
}

/// One `alias PATTERN MODULE` line of `modules.alias`.
pub fn alias_line(line: &str) -> Option<(&str, &str)> {
    let mut words = line.split_whitespace();
    match (words.next(), words.next(), words.next()) {
        (Some("alias"), Some(pattern), Some(module)) => Some((pattern, module)),
        _ => None,
    }
}

impl Index {
    /// Parse the three index files (any may be empty).
    pub fn parse(dep: &str, softdep: &str, alias: &str) -> Index {
        let mut idx = Index::default();
        for (path, deps) in dep.lines().filter_map(dep_line) {
            let deps = deps.into_iter().map(module_name).collect();
            idx.deps.insert(module_name(path), (path.to_string(), deps));
        }
        for sd in softdep.lines().filter_map(softdep_line) {
            let pre = idx.pre.entry(normalize(sd.module)).or_default();
            pre.extend(sd.pre.into_iter().map(normalize));
        }
        for (pattern, module) in alias.lines().filter_map(alias_line) {
            let entry = idx.aliases.entry(pattern.to_string()).or_default();
            entry.push(normalize(module));
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

    /// The modules `names` refer to (by name or alias), each after its
    /// dependencies and softdeps, as file paths relative to the release
    /// directory; names the index does not carry are left out.
    pub fn load_order_of(&self, names: &[&str]) -> Vec<String> {
        let mut seen = BTreeSet::new();
        let mut order = Vec::new();
        for name in names {
            for m in self.resolve(name) {
                self.visit(m, &mut seen, &mut order);
            }
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

    #[test]
    fn index_lines_as_kmod_reads_them() {
        assert_eq!(
            dep_line("kernel/fs/ext4/ext4.ko.xz: kernel/fs/jbd2/jbd2.ko.xz kernel/lib/crc16.ko"),
            Some((
                "kernel/fs/ext4/ext4.ko.xz",
                vec!["kernel/fs/jbd2/jbd2.ko.xz", "kernel/lib/crc16.ko"]
            ))
        );
        assert_eq!(dep_line("no colon"), None);
        let sd = softdep_line("softdep ext4 stray pre: crc32c post: x y").unwrap();
        assert_eq!(
            (sd.module, sd.pre, sd.post),
            ("ext4", vec!["crc32c"], vec!["x", "y"])
        );
        assert_eq!(softdep_line("softdep"), None);
        assert_eq!(softdep_line("# softdep a pre: b"), None);
        assert_eq!(alias_line("alias fs-ext4 ext4"), Some(("fs-ext4", "ext4")));
        assert_eq!(alias_line("alias fs-ext4"), None);
        assert_eq!(module_name("kernel/a/foo-bar.ko.zst"), "foo_bar");
        assert_eq!(module_name("x/foo.kobar.ko"), "foo.kobar");
        assert_eq!(uncompressed_path("a/b.ko.gz"), "a/b.ko");
    }
}
