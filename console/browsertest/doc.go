// Package browsertest holds the web console's browser tests: Debian's
// headless Chromium, driven over the DevTools protocol by chromedp, against
// a real `preboot serve` process with a real store. A simulated iPXE boots
// and a simulated imaging agent play the machines; the test watches what
// the console shows. With PREBOOT_SCREENSHOTS=DIR it also saves
// screenshots of the main pages there (docs/screenshots in the README).
//
// The package has no code outside its test.
package browsertest
