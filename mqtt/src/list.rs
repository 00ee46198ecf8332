//! [`List`]: a repeated field that needs no allocation in either direction.
//!
//! A decoded packet keeps repeated fields (user properties, PUBLISH subscription
//! identifiers, SUBSCRIBE filters, SUBACK/UNSUBACK reason codes, UNSUBSCRIBE
//! filters) as the wire bytes they came in and parses them lazily when iterated.
//! The decoder validated those bytes first, and only it can build such a list, so
//! iteration cannot fail. A packet built for encoding holds a borrowed slice
//! instead: `List::new(&[...])` or `(&slice[..]).into()`.

use core::fmt;

use crate::properties::{PropertyId, Value, read_property};
use crate::reason::ReasonCode;
use crate::subscribe::{SubscribeFilter, SubscriptionOptions};
use crate::wire::Reader;

/// An element type of a [`List`]; sealed, implemented for the element types the
/// packets use.
pub trait Item<'a>: Copy + private::Sealed {
    /// Parses the next element from validated wire bytes; `None` at the end.
    #[doc(hidden)]
    fn next_from_wire(r: &mut Reader<'a>) -> Option<Self>;
}

mod private {
    pub trait Sealed {}
}

/// A repeated packet field: either validated wire bytes or a borrowed slice.
///
/// Two lists are equal when they yield the same elements, whatever their origin.
pub struct List<'a, T> {
    repr: Repr<'a, T>,
}

enum Repr<'a, T> {
    Slice(&'a [T]),
    /// Validated wire bytes; for properties, the whole property section.
    Wire(&'a [u8]),
}

impl<T> Clone for Repr<'_, T> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<T> Copy for Repr<'_, T> {}

impl<'a, T> List<'a, T> {
    /// A list over `items`, for encoding.
    pub const fn new(items: &'a [T]) -> Self {
        Self {
            repr: Repr::Slice(items),
        }
    }

    /// A list over wire bytes the decoder has validated for element type `T`.
    pub(crate) const fn from_wire(bytes: &'a [u8]) -> Self {
        Self {
            repr: Repr::Wire(bytes),
        }
    }
}

impl<'a, T: Item<'a>> List<'a, T> {
    /// Iterates the elements in wire (or slice) order.
    pub fn iter(&self) -> ListIter<'a, T> {
        ListIter {
            repr: match self.repr {
                Repr::Slice(s) => IterRepr::Slice(s.iter()),
                Repr::Wire(b) => IterRepr::Wire(Reader::new(b)),
            },
        }
    }

    /// True when the list has no element.
    pub fn is_empty(&self) -> bool {
        self.iter().next().is_none()
    }

    /// Number of elements (walks wire bytes).
    pub fn len(&self) -> usize {
        match self.repr {
            Repr::Slice(s) => s.len(),
            Repr::Wire(_) => self.iter().count(),
        }
    }
}

impl<T> Clone for List<'_, T> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<T> Copy for List<'_, T> {}

impl<T> Default for List<'_, T> {
    fn default() -> Self {
        Self::new(&[])
    }
}

impl<'a, T> From<&'a [T]> for List<'a, T> {
    fn from(items: &'a [T]) -> Self {
        Self::new(items)
    }
}

impl<'a, T, const N: usize> From<&'a [T; N]> for List<'a, T> {
    fn from(items: &'a [T; N]) -> Self {
        Self::new(items)
    }
}

impl<'a, T: Item<'a> + PartialEq> PartialEq for List<'a, T> {
    fn eq(&self, other: &Self) -> bool {
        self.iter().eq(other.iter())
    }
}

impl<'a, T: Item<'a> + Eq> Eq for List<'a, T> {}

impl<'a, T: Item<'a> + fmt::Debug> fmt::Debug for List<'a, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.iter()).finish()
    }
}

impl<'a, T: Item<'a>> IntoIterator for List<'a, T> {
    type Item = T;
    type IntoIter = ListIter<'a, T>;
    fn into_iter(self) -> Self::IntoIter {
        self.iter()
    }
}

impl<'a, T: Item<'a>> IntoIterator for &List<'a, T> {
    type Item = T;
    type IntoIter = ListIter<'a, T>;
    fn into_iter(self) -> Self::IntoIter {
        self.iter()
    }
}

/// Iterator over a [`List`].
#[derive(Debug, Clone)]
pub struct ListIter<'a, T> {
    repr: IterRepr<'a, T>,
}

#[derive(Debug, Clone)]
enum IterRepr<'a, T> {
    Slice(core::slice::Iter<'a, T>),
    Wire(Reader<'a>),
}

impl<'a, T: Item<'a>> Iterator for ListIter<'a, T> {
    type Item = T;
    fn next(&mut self) -> Option<T> {
        match &mut self.repr {
            IterRepr::Slice(it) => it.next().copied(),
            IterRepr::Wire(r) => T::next_from_wire(r),
        }
    }
}

/// A user property: name and value (MQTT 5.0 §3.3.2.3.7).
pub type UserProperty<'a> = (&'a str, &'a str);
/// The user properties of a packet, in order; names may repeat.
pub type UserProperties<'a> = List<'a, UserProperty<'a>>;
/// PUBLISH subscription identifiers (server to client; one per matching subscription).
pub type SubscriptionIds<'a> = List<'a, u32>;
/// SUBSCRIBE payload.
pub type SubscribeFilters<'a> = List<'a, SubscribeFilter<'a>>;
/// UNSUBSCRIBE payload.
pub type TopicFilters<'a> = List<'a, &'a str>;
/// SUBACK / UNSUBACK payload.
pub type ReasonCodes<'a> = List<'a, ReasonCode>;

impl private::Sealed for UserProperty<'_> {}
impl<'a> Item<'a> for UserProperty<'a> {
    fn next_from_wire(r: &mut Reader<'a>) -> Option<Self> {
        while !r.is_empty() {
            if let (PropertyId::UserProperty, Value::Pair(name, value)) = read_property(r).ok()? {
                return Some((name, value));
            }
        }
        None
    }
}

impl private::Sealed for u32 {}
impl<'a> Item<'a> for u32 {
    fn next_from_wire(r: &mut Reader<'a>) -> Option<Self> {
        while !r.is_empty() {
            if let (PropertyId::SubscriptionIdentifier, Value::Int(id)) = read_property(r).ok()? {
                return Some(id);
            }
        }
        None
    }
}

impl private::Sealed for SubscribeFilter<'_> {}
impl<'a> Item<'a> for SubscribeFilter<'a> {
    fn next_from_wire(r: &mut Reader<'a>) -> Option<Self> {
        if r.is_empty() {
            return None;
        }
        let filter = r.string().ok()?;
        let options = SubscriptionOptions::from_byte(r.u8().ok()?).ok()?;
        Some(SubscribeFilter { filter, options })
    }
}

impl private::Sealed for &str {}
impl<'a> Item<'a> for &'a str {
    fn next_from_wire(r: &mut Reader<'a>) -> Option<Self> {
        if r.is_empty() {
            return None;
        }
        r.string().ok()
    }
}

impl private::Sealed for ReasonCode {}
impl<'a> Item<'a> for ReasonCode {
    fn next_from_wire(r: &mut Reader<'a>) -> Option<Self> {
        if r.is_empty() {
            return None;
        }
        ReasonCode::from_u8(r.u8().ok()?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wire_and_slice_lists_compare_by_content() {
        // Two user properties and a topic alias in between.
        let wire = [
            0x26, 0, 1, b'a', 0, 1, b'1', 0x23, 0, 5, 0x26, 0, 1, b'b', 0, 1, b'2',
        ];
        let decoded: UserProperties<'_> = List::from_wire(&wire);
        let built: UserProperties<'_> = List::new(&[("a", "1"), ("b", "2")]);
        assert_eq!(decoded, built);
        assert_eq!(decoded.len(), 2);
        assert_ne!(decoded, List::new(&[("a", "1")]));
        assert!(UserProperties::default().is_empty());
    }
}
