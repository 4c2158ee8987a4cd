//! The setters of the builders: each writes one field of the builder's settings value, so a
//! new setting needs its field and one line here, not a hand-written method.

/// Inside a builder's `impl` (with the settings in `self.config`): one setter per field, named
/// as the field and documented by a link to it; `=> Some` for an optional field the setter
/// turns on.
macro_rules! config_setters {
    ($config:ident { $($field:ident: $ty:ty $(=> $wrap:ident)?),* $(,)? }) => {
        $(
            #[doc = concat!("Sets [`", stringify!($config), "::", stringify!($field), "`].")]
            pub fn $field(mut self, value: $ty) -> Self {
                self.config.$field = $crate::setters::config_setters!(@wrap value $($wrap)?);
                self
            }
        )*
    };
    (@wrap $value:ident) => { $value };
    (@wrap $value:ident Some) => { Some($value) };
}

pub(crate) use config_setters;
