//! MySQL through the prefix's libmysqlclient (MariaDB Connector/C), and the
//! server's option files.

pub mod client;
pub mod option_files;
