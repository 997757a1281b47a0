//! The boot model of ESP-IDF, kept in an `otadata`-like region: two application slots;
//! a newly written image is marked `New`, boots once in a trial state
//! (`PendingVerify`) and becomes `Valid` when the application confirms it (the node
//! reached the broker); an image still pending at the next boot is marked `Invalid` and
//! the bootloader returns to the previous valid slot. Stored redundantly (two sectors,
//! sequence number and CRC) so a power loss during an update never loses the state.
//! The host runtime uses this as its emulated bootloader; on the chip, the ESP-IDF
//! bootloader and `esp-bootloader-esp-idf` implement the same states.
