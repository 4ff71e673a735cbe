// The stand-in for React 18's UMD build in the browser tests: just what a page needs to
// mount Plurality's widget (React.createElement, ReactDOM.createRoot(...).render).
window.React = {
  createElement: function (type, props) {
    return { type: type, props: props || {} };
  },
};
