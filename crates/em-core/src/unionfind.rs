//! Disjoint sets (union-find) over a parent table, for connected-component labelling.
//!
//! The table is whatever the caller already holds — a `Vec<usize>`, a slice of labels that
//! later becomes the output, a window of a larger buffer — through the [`UnionFind`] trait:
//! it needs only reading and writing one entry, and gets [`find`](UnionFind::find) (with
//! path halving), [`root`](UnionFind::root) (read-only) and [`union`](UnionFind::union).
//! Slices of `u32`, `u64` and `usize` implement it directly.
//!
//! Which root survives a union is fixed, never by rank or size: [`union`](UnionFind::union)
//! keeps the smaller index, [`union_by_key`](UnionFind::union_by_key) the smaller key. When
//! ids are created in raster order this makes every root the first element of its set, so
//! numbering roots in order is numbering components by first appearance — the labels the
//! decoders promise. Without union by rank, path halving is what keeps the trees shallow.
//!
//! ```
//! use em_core::UnionFind;
//!
//! // Five elements, each its own set.
//! let mut parent: Vec<u32> = (0..5).collect();
//! assert_eq!(parent.union(3, 1), 1); // the smaller index survives
//! assert_eq!(parent.union(4, 3), 1);
//! assert_eq!(parent.find(4), 1);
//! assert_eq!(parent.root(2), 2);
//! ```

use crate::Label;

/// One entry of a parent table: the index of the element's parent (itself for a root).
pub trait Node: Copy {
    /// The index this entry points to.
    fn index(self) -> usize;
    /// The entry pointing to `i`; tables are sized so that every index fits (a label type
    /// saturates at its maximum otherwise).
    fn from_index(i: usize) -> Self;
}

impl<L: Label> Node for L {
    #[inline(always)]
    fn index(self) -> usize {
        self.to_usize()
    }

    #[inline(always)]
    fn from_index(i: usize) -> Self {
        L::from_u64(i as u64).unwrap_or(L::MAX)
    }
}

impl Node for usize {
    #[inline(always)]
    fn index(self) -> usize {
        self
    }

    #[inline(always)]
    fn from_index(i: usize) -> Self {
        i
    }
}

/// A union-find forest stored as a parent table, indexed by element.
///
/// Implementors give access to one entry; the operations are provided.
pub trait UnionFind {
    /// The entry type.
    type Node: Node;

    /// The entry of element `i`.
    fn node(&self, i: usize) -> Self::Node;

    /// Sets the entry of element `i`.
    fn set_node(&mut self, i: usize, node: Self::Node);

    /// The root of `i`'s set, without changing the table.
    #[inline(always)]
    fn root(&self, mut i: usize) -> usize {
        loop {
            let p = self.node(i).index();
            if p == i {
                return i;
            }
            i = p;
        }
    }

    /// The root of `i`'s set; every element on the way is pointed to its grandparent (path
    /// halving), which keeps later searches short.
    #[inline(always)]
    fn find(&mut self, mut i: usize) -> usize {
        loop {
            let p = self.node(i).index();
            if p == i {
                return i;
            }
            let g = self.node(p);
            self.set_node(i, g);
            i = g.index();
        }
    }

    /// Joins the sets of `a` and `b`; the root with the smaller index survives and is
    /// returned.
    #[inline(always)]
    fn union(&mut self, a: usize, b: usize) -> usize {
        let (ra, rb) = (self.find(a), self.find(b));
        // Branches, not a select: the store's address is then known before both finds
        // finish, which the next union's finds need (a select took 17 % longer on
        // em-decode's `benches/unionfind.rs`, `uf_ops/shared_usize`).
        if ra < rb {
            self.set_node(rb, Self::Node::from_index(ra));
            ra
        } else {
            if rb < ra {
                self.set_node(ra, Self::Node::from_index(rb));
            }
            rb
        }
    }

    /// Joins the sets of `a` and `b`; the root with the smaller `key` survives (the one of
    /// `a` on a tie) and is returned.
    #[inline(always)]
    fn union_by_key<K: Ord>(&mut self, a: usize, b: usize, key: impl Fn(usize) -> K) -> usize {
        let (ra, rb) = (self.find(a), self.find(b));
        if ra == rb {
            return ra;
        }
        let (keep, child) = if key(ra) <= key(rb) {
            (ra, rb)
        } else {
            (rb, ra)
        };
        self.set_node(child, Self::Node::from_index(keep));
        keep
    }
}

impl<N: Node> UnionFind for [N] {
    type Node = N;

    #[inline(always)]
    fn node(&self, i: usize) -> N {
        self[i]
    }

    #[inline(always)]
    fn set_node(&mut self, i: usize, node: N) {
        self[i] = node;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A table of singletons.
    fn singletons<N: Node>(n: usize, of: impl Fn(usize) -> N) -> Vec<N> {
        (0..n).map(of).collect()
    }

    #[test]
    fn smaller_root_survives() {
        let mut p = singletons(8, |i| i as u32);
        assert_eq!(p.union(5, 7), 5);
        assert_eq!(p.union(7, 2), 2);
        assert_eq!(p.union(6, 5), 2);
        assert_eq!(p.union(2, 6), 2);
        for i in [2, 5, 6, 7] {
            assert_eq!(p.find(i), 2);
            assert_eq!(p.root(i), 2);
        }
        for i in [0, 1, 3, 4] {
            assert_eq!(p.find(i), i);
        }
    }

    #[test]
    fn smaller_key_survives() {
        // Keys in reverse index order: the larger index wins.
        let mut p = singletons(6, |i| i);
        let key = |r: usize| std::cmp::Reverse(r);
        assert_eq!(p.union_by_key(1, 4, key), 4);
        assert_eq!(p.union_by_key(0, 1, key), 4);
        assert_eq!(p.union_by_key(0, 4, key), 4);
        assert_eq!(p.find(0), 4);
        // Equal keys: `a`'s root survives.
        assert_eq!(p.union_by_key(5, 2, |_| 0), 5);
        assert_eq!(p.find(2), 5);
    }

    #[test]
    fn halving_shortens_paths() {
        // A chain 4 → 3 → 2 → 1 → 0.
        let mut p: Vec<u64> = vec![0, 0, 1, 2, 3];
        assert_eq!(p.root(4), 0);
        assert_eq!(p, [0, 0, 1, 2, 3]);
        assert_eq!(p.find(4), 0);
        // 4 now points to 2, and 2 to 0: every other link of the path was skipped.
        assert_eq!(p, [0, 0, 0, 2, 2]);
    }

    #[test]
    fn works_on_a_window_of_a_buffer() {
        /// Elements `base..base + len` of a larger index space.
        struct Window<'a> {
            parent: &'a mut [u32],
            base: usize,
        }
        impl UnionFind for Window<'_> {
            type Node = u32;
            fn node(&self, i: usize) -> u32 {
                self.parent[i - self.base]
            }
            fn set_node(&mut self, i: usize, node: u32) {
                self.parent[i - self.base] = node;
            }
        }
        let mut buf: Vec<u32> = (10..16).collect();
        let mut w = Window {
            parent: &mut buf,
            base: 10,
        };
        assert_eq!(w.union(14, 12), 12);
        assert_eq!(w.union(15, 14), 12);
        assert_eq!(buf, [10, 11, 12, 13, 12, 12]);
    }
}
