package httpstore

// LsMode is lsMode for the external tests.
var LsMode = lsMode
