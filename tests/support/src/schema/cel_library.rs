//! The CEL environment of CRD validation rules: cel-rust's standard library
//! and strings extension, plus the Kubernetes libraries the rules use
//! (`k8s.io/apiserver/pkg/cel/library`: regex, lists).

use cel::common::types::{CelBool, CelInt, CelList, CelString, LIST_TYPE};
use cel::common::value::{CowVal, Val};
use cel::{Env, ExecutionError, extensions};
use regex::Regex;
use std::cell::RefCell;
use std::cmp::Ordering;
use std::collections::HashMap;
use std::sync::{Arc, OnceLock};

/// What rules call `matches` as: the standard overload compiles its pattern
/// on every call, far too slow for a server validating thousands of writes
/// a second. Rules are rewritten to this name when compiled; `@` keeps
/// users from calling it directly.
pub(super) const MATCHES: &str = "@k8s_matches";

/// Function names a rule may call: what the environment declares, by name
/// (overloads are still picked by argument types at run time). Operators are
/// not listed: the parser produces only valid ones.
pub(super) const FUNCTIONS: &[&str] = &[
    // standard library
    "size",
    "contains",
    "startsWith",
    "endsWith",
    "matches",
    "int",
    "uint",
    "double",
    "string",
    "bool",
    "bytes",
    "duration",
    "timestamp",
    "dyn",
    "type",
    "getDate",
    "getDayOfMonth",
    "getDayOfWeek",
    "getDayOfYear",
    "getFullYear",
    "getHours",
    "getMilliseconds",
    "getMinutes",
    "getMonth",
    "getSeconds",
    "of",
    "none",
    "ofNonZeroValue",
    "hasValue",
    "value",
    "or",
    "orValue",
    // cel-go ext.Strings, as Kubernetes enables it
    "charAt",
    "indexOf",
    "lastIndexOf",
    "join",
    "lowerAscii",
    "upperAscii",
    "trim",
    "replace",
    "split",
    "substring",
    "format",
    "quote",
    "reverse",
    // Kubernetes regex and lists libraries
    "find",
    "findAll",
    "isSorted",
    "sum",
    "min",
    "max",
];

/// Names usable as plain identifiers besides `self`, `oldSelf` and
/// comprehension variables: type names and function namespaces.
pub(super) const IDENTS: &[&str] = &[
    "int",
    "uint",
    "double",
    "string",
    "bool",
    "bytes",
    "list",
    "map",
    "null_type",
    "type",
    "dyn",
    "duration",
    "timestamp",
    "optional",
    "strings",
];

/// The shared environment, built once per process.
pub(super) fn env() -> &'static Arc<Env> {
    static ENV: OnceLock<Arc<Env>> = OnceLock::new();
    ENV.get_or_init(|| {
        let mut env = Env::stdlib();
        env.add_extension(extensions::strings)
            .and_then(|()| env.add_extension(kubernetes))
            .expect("the CEL library declares each overload once");
        Arc::new(env)
    })
}

fn kubernetes(env: &mut Env) -> Result<(), cel::DeclarationError> {
    cel::add_member_overload!(env, fn matches: (CelString, CelString) -> Result<CelBool>,
        name = MATCHES)?;
    cel::add_overload!(env, fn matches: (CelString, CelString) -> Result<CelBool>,
        name = MATCHES, id = "@k8s_matches_string_string")?;
    cel::add_member_overload!(env, fn find: (CelString, CelString) -> Result<CelString>)?;
    cel::add_member_overload!(env, fn find_all: (CelString, CelString) -> Result<CelList>)?;
    cel::add_member_overload!(env, fn find_all_n: (CelString, CelString, CelInt) -> Result<CelList>,
        name = "findAll")?;
    env.add_member_overload("isSorted", "list.isSorted()", LIST_TYPE, vec![], is_sorted)?;
    env.add_member_overload("sum", "list.sum()", LIST_TYPE, vec![], sum)?;
    env.add_member_overload("min", "list.min()", LIST_TYPE, vec![], min)?;
    env.add_member_overload("max", "list.max()", LIST_TYPE, vec![], max)?;
    env.add_member_overload(
        "indexOf",
        "list.indexOf(dyn)",
        LIST_TYPE,
        vec![dyn_type()],
        index_of,
    )?;
    env.add_member_overload(
        "lastIndexOf",
        "list.lastIndexOf(dyn)",
        LIST_TYPE,
        vec![dyn_type()],
        last_index_of,
    )?;
    Ok(())
}

fn dyn_type() -> cel::common::types::Type {
    cel::common::types::DYN_TYPE.to_owned()
}

/// Compiled patterns, per thread: rules use a handful of literal patterns,
/// so the cache stays small; it is cleared if a rule builds patterns from
/// data and makes it grow.
fn with_regex<T>(
    function: &str,
    pattern: &str,
    f: impl FnOnce(&Regex) -> T,
) -> Result<T, ExecutionError> {
    thread_local! {
        static CACHE: RefCell<HashMap<String, Regex>> = RefCell::new(HashMap::new());
    }
    CACHE.with(|cache| {
        let mut cache = cache.borrow_mut();
        if let Some(re) = cache.get(pattern) {
            return Ok(f(re));
        }
        let re = Regex::new(pattern).map_err(|e| {
            ExecutionError::function_error(function, format!("invalid regex {pattern:?}: {e}"))
        })?;
        let out = f(&re);
        if cache.len() >= 256 {
            cache.clear();
        }
        cache.insert(pattern.to_owned(), re);
        Ok(out)
    })
}

fn matches(this: &CelString<'_>, re: &CelString<'_>) -> Result<CelBool, ExecutionError> {
    with_regex("matches", re.inner(), |re| {
        CelBool::from(re.is_match(this.inner()))
    })
}

/// `'abc'.find('b.')`: the first match, or `""`.
fn find(this: &CelString<'_>, re: &CelString<'_>) -> Result<CelString<'static>, ExecutionError> {
    with_regex("find", re.inner(), |re| {
        CelString::from(
            re.find(this.inner())
                .map(|m| m.as_str())
                .unwrap_or("")
                .to_owned(),
        )
    })
}

fn find_all(this: &CelString<'_>, re: &CelString<'_>) -> Result<CelList<'static>, ExecutionError> {
    find_all_n(this, re, &CelInt::from(-1))
}

/// `findAll(re, n)`: at most `n` matches, all when `n` is negative.
fn find_all_n(
    this: &CelString<'_>,
    re: &CelString<'_>,
    n: &CelInt,
) -> Result<CelList<'static>, ExecutionError> {
    let limit = usize::try_from(*n.inner()).unwrap_or(usize::MAX);
    with_regex("findAll", re.inner(), |re| {
        let found: Vec<Box<dyn Val>> = re
            .find_iter(this.inner())
            .take(limit)
            .map(|m| Box::new(CelString::from(m.as_str().to_owned())) as Box<dyn Val>)
            .collect();
        CelList::from(found)
    })
}

fn elements<'a, 'b, 'v>(
    list: &'a CowVal<'b, 'v>,
    function: &str,
) -> Result<Vec<&'a (dyn Val + 'v)>, ExecutionError> {
    let iterable = list
        .as_iterable()
        .ok_or_else(|| ExecutionError::function_error(function, "not a list"))?;
    let mut iter = iterable.iter();
    let mut out = Vec::new();
    while let Some(v) = iter.next() {
        out.push(v);
    }
    Ok(out)
}

fn compare(function: &str, a: &dyn Val, b: &dyn Val) -> Result<Ordering, ExecutionError> {
    a.as_comparer()
        .ok_or_else(|| ExecutionError::function_error(function, "elements are not comparable"))?
        .compare(b)
}

fn is_sorted<'b, 'v>(args: Vec<CowVal<'b, 'v>>) -> Result<CowVal<'b, 'v>, ExecutionError> {
    let items = elements(&args[0], "isSorted")?;
    for pair in items.windows(2) {
        if compare("isSorted", pair[0], pair[1])? == Ordering::Greater {
            return Ok(CowVal::owned(CelBool::from(false)));
        }
    }
    Ok(CowVal::owned(CelBool::from(true)))
}

/// `[1, 2].sum()`; `0` for an empty list (Kubernetes types it by the list,
/// an untyped empty list sums to an int here).
fn sum<'b, 'v>(args: Vec<CowVal<'b, 'v>>) -> Result<CowVal<'b, 'v>, ExecutionError> {
    let items = elements(&args[0], "sum")?;
    let mut iter = items.into_iter();
    let Some(first) = iter.next() else {
        return Ok(CowVal::owned(CelInt::from(0)));
    };
    let mut total: Box<dyn Val + 'v> = first.clone_as_boxed();
    for item in iter {
        let next = total
            .as_adder()
            .ok_or_else(|| ExecutionError::function_error("sum", "elements cannot be added"))?
            .add(item)?
            .into_owned();
        total = next;
    }
    Ok(CowVal::Owned(total))
}

fn extreme<'b, 'v>(
    args: Vec<CowVal<'b, 'v>>,
    function: &str,
    keep: Ordering,
) -> Result<CowVal<'b, 'v>, ExecutionError> {
    let items = elements(&args[0], function)?;
    let mut best = *items.first().ok_or_else(|| {
        ExecutionError::function_error(function, format!("{function} called on empty list"))
    })?;
    for item in &items[1..] {
        if compare(function, *item, best)? == keep {
            best = *item;
        }
    }
    Ok(CowVal::Owned(best.clone_as_boxed()))
}

fn min<'b, 'v>(args: Vec<CowVal<'b, 'v>>) -> Result<CowVal<'b, 'v>, ExecutionError> {
    extreme(args, "min", Ordering::Less)
}

fn max<'b, 'v>(args: Vec<CowVal<'b, 'v>>) -> Result<CowVal<'b, 'v>, ExecutionError> {
    extreme(args, "max", Ordering::Greater)
}

fn position<'b, 'v>(
    args: Vec<CowVal<'b, 'v>>,
    function: &str,
    last: bool,
) -> Result<CowVal<'b, 'v>, ExecutionError> {
    let items = elements(&args[0], function)?;
    let needle: &dyn Val = args[1].as_ref();
    let found = if last {
        items.iter().rposition(|v| v.equals(needle))
    } else {
        items.iter().position(|v| v.equals(needle))
    };
    let index = found.map_or(-1, |i| i as i64);
    Ok(CowVal::owned(CelInt::from(index)))
}

fn index_of<'b, 'v>(args: Vec<CowVal<'b, 'v>>) -> Result<CowVal<'b, 'v>, ExecutionError> {
    position(args, "indexOf", false)
}

fn last_index_of<'b, 'v>(args: Vec<CowVal<'b, 'v>>) -> Result<CowVal<'b, 'v>, ExecutionError> {
    position(args, "lastIndexOf", true)
}

#[cfg(test)]
mod tests {
    use super::*;
    use cel::{Context, Value};

    fn eval(expr: &str) -> Result<Value, ExecutionError> {
        let env = Arc::clone(env());
        let mut parsed = env.parser().parse(expr).expect("parses");
        super::super::cel::rewrite_matches(&mut parsed);
        let ctx = Context::with_env(env);
        Value::resolve(&parsed, &ctx)
    }

    #[test]
    fn library_functions_behave_like_kubernetes() {
        let cases: &[(&str, Value)] = &[
            ("'abc'.matches('^a')", true.into()),
            ("'abc'.matches('^b')", false.into()),
            ("matches('abc', 'c$')", true.into()),
            ("'unix:///a'.substring(7, 8)", "/".into()),
            (
                "'abc'.startsWith('ab') && 'abc'.endsWith('bc')",
                true.into(),
            ),
            ("'a-b-c'.split('-').join('+')", "a+b+c".into()),
            ("'ABC'.lowerAscii()", "abc".into()),
            ("'abcabc'.indexOf('c')", 2.into()),
            ("'abcabc'.lastIndexOf('c')", 5.into()),
            ("'ab12cd345'.find('[0-9]+')", "12".into()),
            ("'ab12cd345'.findAll('[0-9]+').size()", 2.into()),
            (
                "'ab12cd345'.findAll('[0-9]+', 1)",
                Value::List(Arc::new(vec!["12".into()])),
            ),
            ("[1, 2, 2].isSorted() && ![2, 1].isSorted()", true.into()),
            ("[1, 2, 3].sum()", 6.into()),
            ("[3, 1, 2].min() == 1 && [3, 1, 2].max() == 3", true.into()),
            (
                "[1, 2, 1].indexOf(1) == 0 && [1, 2, 1].lastIndexOf(1) == 2",
                true.into(),
            ),
            ("[1].indexOf(9)", (-1).into()),
            ("'%s-%d'.format(['a', 1])", "a-1".into()),
        ];
        for (expr, want) in cases {
            assert_eq!(eval(expr).as_ref(), Ok(want), "{expr}");
        }
    }

    #[test]
    fn out_of_range_and_bad_patterns_are_errors() {
        assert!(eval("'unix://'.substring(7, 8)").is_err());
        assert!(eval("'a'.matches('(')").is_err());
        assert!(eval("[].min()").is_err());
    }
}
