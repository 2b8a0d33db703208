//! A set of up to eight flags in one byte, for the pin reasons and unpin
//! kinds a query reports; copied freely on the hot path.

use std::fmt;
use std::marker::PhantomData;

/// A value that fits in a [`FlagSet`]: an enum whose values map onto at
/// most 8 bits (values sharing a bit are one member of a set).
pub trait Flag: Copy + 'static {
    /// One value per bit, in the order a set lists them.
    const ALL: &'static [Self];
    /// The value's bit number, below 8 (a larger one is never stored).
    fn bit(self) -> u8;
}

/// A small set of [`Flag`]s, stored as a bit mask.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct FlagSet<T> {
    bits: u8,
    of: PhantomData<T>,
}

impl<T: Flag> FlagSet<T> {
    /// The empty set.
    pub const EMPTY: Self = Self {
        bits: 0,
        of: PhantomData,
    };

    /// True when `flag` is in the set.
    pub fn contains(self, flag: T) -> bool {
        self.bits & Self::mask(flag) != 0
    }

    /// Adds `flag`.
    pub fn insert(&mut self, flag: T) {
        self.bits |= Self::mask(flag);
    }

    /// Removes `flag`.
    pub fn remove(&mut self, flag: T) {
        self.bits &= !Self::mask(flag);
    }

    /// True when the set holds nothing.
    pub fn is_empty(self) -> bool {
        self.bits == 0
    }

    /// Everything in either set.
    pub fn union(self, other: Self) -> Self {
        Self {
            bits: self.bits | other.bits,
            of: PhantomData,
        }
    }

    /// The members, in [`Flag::ALL`] order.
    pub fn iter(self) -> impl Iterator<Item = T> {
        T::ALL
            .iter()
            .copied()
            .filter(move |&flag| self.contains(flag))
    }

    /// The first member in [`Flag::ALL`] order.
    pub fn first(self) -> Option<T> {
        self.iter().next()
    }

    fn mask(flag: T) -> u8 {
        1u8.checked_shl(u32::from(flag.bit())).unwrap_or(0)
    }
}

impl<T: Flag> Default for FlagSet<T> {
    fn default() -> Self {
        Self::EMPTY
    }
}

impl<T: Flag> FromIterator<T> for FlagSet<T> {
    fn from_iter<I: IntoIterator<Item = T>>(iter: I) -> Self {
        let mut set = Self::EMPTY;
        for flag in iter {
            set.insert(flag);
        }
        set
    }
}

impl<T: Flag + fmt::Debug> fmt::Debug for FlagSet<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_set().entries(self.iter()).finish()
    }
}
