/**
 * HTTP-date (RFC 9110 §5.6.7), as the static adapter's conditional requests read it
 * (If-Modified-Since, If-Unmodified-Since, If-Range). Hand-written: JavaScript's Date.parse (and
 * the `fresh` package, which uses it) reads far more than HTTP-dates (`1` is 2001-01-01, `9999`
 * the year 9999, ISO 8601, `24:00:00`, `29 Feb` of any year), and RFC 9110 §13.1.3/§13.1.4 want a
 * field that is no HTTP-date ignored. The three formats a recipient must accept, each in GMT:
 *
 *   IMF-fixdate   Sun, 06 Nov 1994 08:49:37 GMT
 *   rfc850-date   Sunday, 06-Nov-94 08:49:37 GMT   (obsolete; a 2-digit year)
 *   asctime-date  Sun Nov  6 08:49:37 1994         (obsolete)
 *
 * Names are matched as the grammar writes them (case-sensitive); the day name is not checked
 * against the date, as nginx does not either.
 */

const MONTHS = ['Jan', 'Feb', 'Mar', 'Apr', 'May', 'Jun', 'Jul', 'Aug', 'Sep', 'Oct', 'Nov', 'Dec']
const MONTH = `(${MONTHS.join('|')})`
const TIME = '(\\d{2}):(\\d{2}):(\\d{2})'

const IMF_FIXDATE = new RegExp(`^(?:Mon|Tue|Wed|Thu|Fri|Sat|Sun), (\\d{2}) ${MONTH} (\\d{4}) ${TIME} GMT$`)
const RFC850_DATE = new RegExp(`^(?:Monday|Tuesday|Wednesday|Thursday|Friday|Saturday|Sunday), (\\d{2})-${MONTH}-(\\d{2}) ${TIME} GMT$`)
const ASCTIME_DATE = new RegExp(`^(?:Mon|Tue|Wed|Thu|Fri|Sat|Sun) ${MONTH} (\\d{2}| \\d) ${TIME} (\\d{4})$`)

/** The time (ms since the epoch) of an HTTP-date, or NaN when `value` is none. */
export function parseHttpDate (value: string | undefined): number {
  if (value === undefined) return NaN
  const v = value.trim()
  let m = IMF_FIXDATE.exec(v)
  if (m !== null) return fromParts(Number(m[3]), m[2], m[1], m[4], m[5], m[6])
  m = RFC850_DATE.exec(v)
  if (m !== null) return fromParts(rfc850Year(Number(m[3])), m[2], m[1], m[4], m[5], m[6])
  m = ASCTIME_DATE.exec(v)
  if (m !== null) return fromParts(Number(m[6]), m[1], m[2].trim(), m[3], m[4], m[5])
  return NaN
}

/**
 * A 2-digit year: the one of this century, unless that is more than 50 years in the future, then
 * the past century's (RFC 9110 §5.6.7).
 */
function rfc850Year (yy: number): number {
  const now = new Date().getUTCFullYear()
  const year = now - (now % 100) + yy
  return year > now + 50 ? year - 100 : year
}

/** NaN unless each field is in its range and the day exists in that month (no roll-over). */
function fromParts (year: number, month: string, day: string, hour: string, minute: string, second: string): number {
  const mon = MONTHS.indexOf(month)
  const d = Number(day)
  const h = Number(hour)
  const mi = Number(minute)
  const s = Number(second)
  // time-of-day: hour 00-23, minute 00-59, second 00-60 (a leap second, §5.6.7).
  if (d < 1 || h > 23 || mi > 59 || s > 60) return NaN
  const date = new Date(Date.UTC(year, mon, d))
  // Date.UTC maps 0-99 to 1900-1999; a 4-digit year below 100 is its own year.
  date.setUTCFullYear(year, mon, d)
  if (date.getUTCDate() !== d || date.getUTCMonth() !== mon) return NaN
  return date.getTime() + ((h * 60 + mi) * 60 + s) * 1000
}
