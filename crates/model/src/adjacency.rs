//! Lists of indices, one list per node, kept in one buffer.
//!
//! Each system's dependencies, and each system's dependents inside a stage
//! while it is scheduled, were a `Vec` per system: at 100,000 systems that is
//! 100,000 small allocations per graph, each freed again, and a walk of the
//! graph jumping all over the heap. Here a node's list is a slice of one
//! buffer, in node order.

use std::ops::Index;

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Adjacency {
    /// Where each node's list begins in `items`, and after the last node
    /// where the items end: one more than the number of nodes.
    starts: Vec<usize>,
    items: Vec<usize>,
}

impl Default for Adjacency {
    fn default() -> Self {
        Adjacency::with_capacity(0, 0)
    }
}

impl Adjacency {
    pub(crate) fn with_capacity(nodes: usize, items: usize) -> Self {
        let mut starts = Vec::with_capacity(nodes + 1);
        starts.push(0);
        Adjacency {
            starts,
            items: Vec::with_capacity(items),
        }
    }

    /// Adds an item to the list being written, the one [`Self::close`] ends.
    pub(crate) fn push(&mut self, item: usize) {
        self.items.push(item);
    }

    /// The items pushed since the last list was closed.
    pub(crate) fn open(&self) -> &[usize] {
        let from = self.starts.last().copied().unwrap_or(0);
        &self.items[from..]
    }

    /// Ends the list being written: it is the next node's.
    pub(crate) fn close(&mut self) {
        self.starts.push(self.items.len());
    }

    /// The lists of `nodes` nodes from `(node, item)` pairs, each list in
    /// the order its pairs come; `pairs` is walked twice (a count, then a
    /// fill), so nothing is allocated per node.
    pub(crate) fn from_pairs<I>(nodes: usize, pairs: impl Fn() -> I) -> Self
    where
        I: Iterator<Item = (usize, usize)>,
    {
        let mut starts = vec![0usize; nodes + 1];
        for (node, _) in pairs() {
            starts[node + 1] += 1;
        }
        for k in 1..starts.len() {
            starts[k] += starts[k - 1];
        }
        let mut next = starts.clone();
        let mut items = vec![0usize; starts[nodes]];
        for (node, item) in pairs() {
            items[next[node]] = item;
            next[node] += 1;
        }
        Adjacency { starts, items }
    }

    /// How many nodes have a list.
    pub(crate) fn len(&self) -> usize {
        self.starts.len() - 1
    }

    /// Every node's list, in node order.
    pub(crate) fn iter(&self) -> impl Iterator<Item = &[usize]> {
        self.starts.windows(2).map(|w| &self.items[w[0]..w[1]])
    }
}

impl Index<usize> for Adjacency {
    type Output = [usize];

    fn index(&self, node: usize) -> &[usize] {
        &self.items[self.starts[node]..self.starts[node + 1]]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lists_pushed_one_by_one_come_back_as_written() {
        let lists: [&[usize]; 4] = [&[3, 1], &[], &[0], &[2, 2, 5]];
        let mut a = Adjacency::with_capacity(1, 1);
        for list in lists {
            for &i in list {
                a.push(i);
            }
            assert_eq!(a.open(), list);
            a.close();
            assert_eq!(a.open(), &[] as &[usize]);
        }
        assert_eq!(a.len(), 4);
        for (k, list) in lists.iter().enumerate() {
            assert_eq!(&a[k], *list);
        }
        assert_eq!(a.iter().collect::<Vec<_>>(), lists);
        assert_eq!(Adjacency::default().len(), 0);
    }

    #[test]
    fn lists_from_pairs_keep_the_pairs_order() {
        let pairs = [(2, 7), (0, 4), (2, 1), (0, 9), (2, 3)];
        let a = Adjacency::from_pairs(4, || pairs.iter().copied());
        assert_eq!(a.len(), 4);
        assert_eq!(&a[0], &[4, 9]);
        assert_eq!(&a[1], &[] as &[usize]);
        assert_eq!(&a[2], &[7, 1, 3]);
        assert_eq!(&a[3], &[] as &[usize]);
        assert_eq!(Adjacency::from_pairs(3, std::iter::empty).iter().count(), 3);
    }
}
