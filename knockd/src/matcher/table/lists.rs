//! Intrusive doubly linked lists through a slab (the attempts; the networks): each element
//! holds its previous and next slot in each list it is in, each list its head and tail. Appending and unlinking
//! are O(1) and touch only the attempt, its two neighbours and the list's ends.

use super::{Attempt, NONE};

/// Which of an attempt's links: its door's list (every attempt).
pub const BY_DOOR: usize = 0;
/// Its network's stage-1 list (stage-1 attempts).
pub const BY_NET: usize = 1;
/// The table's stage-1 list (stage-1 attempts).
pub const BY_AGE: usize = 2;

/// An attempt's neighbours in one list (NONE at an end, or when not in it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Link {
    pub prev: u32,
    pub next: u32,
}

impl Link {
    pub const NONE: Link = Link {
        prev: NONE,
        next: NONE,
    };
}

/// A list's oldest (head) and newest (tail) attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ends {
    pub head: u32,
    pub tail: u32,
}

impl Ends {
    pub const EMPTY: Ends = Ends {
        head: NONE,
        tail: NONE,
    };
}

/// What a list can thread through: its links in list `l`.
pub trait Linked {
    fn link(&mut self, l: usize) -> &mut Link;
}

impl Linked for Attempt {
    #[inline]
    fn link(&mut self, l: usize) -> &mut Link {
        &mut self.links[l]
    }
}

/// `Some(slot)` unless it is [`NONE`].
pub fn some(slot: u32) -> Option<u32> {
    (slot != NONE).then_some(slot)
}

/// Appends attempt `i` (in no list `l`) to `list` as its newest.
#[inline]
pub fn push_back<T: Linked>(slots: &mut [T], list: &mut Ends, i: u32, l: usize) {
    let tail = list.tail;
    *slots[i as usize].link(l) = Link {
        prev: tail,
        next: NONE,
    };
    if tail == NONE {
        list.head = i;
    } else {
        slots[tail as usize].link(l).next = i;
    }
    list.tail = i;
}

/// Takes attempt `i` out of `list` (the list `l` it is in). Its own links are left as they
/// were: nothing reads them until it is appended again.
#[inline]
pub fn unlink<T: Linked>(slots: &mut [T], list: &mut Ends, i: u32, l: usize) {
    let Link { prev, next } = *slots[i as usize].link(l);
    if prev == NONE {
        list.head = next;
    } else {
        slots[prev as usize].link(l).next = next;
    }
    if next == NONE {
        list.tail = prev;
    } else {
        slots[next as usize].link(l).prev = prev;
    }
}

/// Makes attempt `i` (in `list`, its list `l`) the newest of `list`.
#[inline]
pub fn to_back<T: Linked>(slots: &mut [T], list: &mut Ends, i: u32, l: usize) {
    if list.tail != i {
        unlink(slots, list, i, l);
        push_back(slots, list, i, l);
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use std::net::{IpAddr, Ipv4Addr};
    use std::time::Instant;

    /// The slots of `list`, walked from its head, and checked backwards from its tail.
    fn walk(slots: &[Attempt], list: Ends, l: usize) -> Vec<u32> {
        let mut out = Vec::new();
        let mut i = list.head;
        while i != NONE {
            out.push(i);
            i = slots[i as usize].links[l].next;
        }
        let mut back = Vec::new();
        let mut i = list.tail;
        while i != NONE {
            back.push(i);
            i = slots[i as usize].links[l].prev;
        }
        back.reverse();
        assert_eq!(out, back, "the prev links mirror the next links");
        out
    }

    #[test]
    fn appends_and_unlinks_keep_the_order_of_the_others() {
        let src = IpAddr::V4(Ipv4Addr::LOCALHOST);
        let mut slots: Vec<Attempt> = (0..5)
            .map(|_| Attempt::new(src, 0, 0, Instant::now(), 1))
            .collect();
        let mut list = Ends::EMPTY;
        for i in [3, 0, 4, 1] {
            push_back(&mut slots, &mut list, i, BY_NET);
        }
        assert_eq!(walk(&slots, list, BY_NET), [3, 0, 4, 1]);
        unlink(&mut slots, &mut list, 0, BY_NET); // middle
        assert_eq!(walk(&slots, list, BY_NET), [3, 4, 1]);
        unlink(&mut slots, &mut list, 3, BY_NET); // head
        unlink(&mut slots, &mut list, 1, BY_NET); // tail
        assert_eq!(walk(&slots, list, BY_NET), [4]);
        push_back(&mut slots, &mut list, 0, BY_NET); // again, at the end
        assert_eq!(walk(&slots, list, BY_NET), [4, 0]);
        to_back(&mut slots, &mut list, 0, BY_NET); // already there
        assert_eq!(walk(&slots, list, BY_NET), [4, 0]);
        to_back(&mut slots, &mut list, 4, BY_NET);
        assert_eq!(walk(&slots, list, BY_NET), [0, 4]);
        assert_eq!(walk(&slots, Ends::EMPTY, BY_DOOR), Vec::<u32>::new());
        unlink(&mut slots, &mut list, 4, BY_NET);
        unlink(&mut slots, &mut list, 0, BY_NET);
        assert_eq!(list, Ends::EMPTY);
    }
}
