//! MySQL through the prefix's libmysqlclient (MariaDB Connector/C).

pub mod client;
