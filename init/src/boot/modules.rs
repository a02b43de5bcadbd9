//! Kernel modules carried by the initramfs: parse modules.dep, modules.softdep
//! and modules.alias, and compute a load order where every module comes after
//! its dependencies and its `softdep pre:` modules.

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

    /// Carried modules a name refers to: the module itself, else its aliases.
    fn resolve(&self, name: &str) -> Vec<String> {
        if self.deps.contains_key(name) {
            return vec![name.to_string()];
        }
        let aliased = self.aliases.get(name).cloned().unwrap_or_default();
        aliased
            .into_iter()
            .filter(|m| self.deps.contains_key(m))
            .collect()
    }

    /// Every carried module, each after its dependencies and softdeps, as file
    /// paths relative to the release directory.
    pub fn load_order(&self) -> Vec<String> {
        let mut done = BTreeSet::new();
        let mut order = Vec::new();
        for name in self.deps.keys() {
            self.visit(name, &mut done, &mut order);
        }
        order
    }

    fn visit(&self, name: &str, done: &mut BTreeSet<String>, order: &mut Vec<String>) {
        if !done.insert(name.to_string()) {
            return;
        }
        let Some((path, deps)) = self.deps.get(name) else {
            return;
        };
        for soft in self.pre.get(name).into_iter().flatten() {
            for m in self.resolve(soft) {
                self.visit(&m, done, order);
            }
        }
        for d in deps {
            self.visit(d, done, order);
        }
        order.push(path.clone());
    }
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
}
